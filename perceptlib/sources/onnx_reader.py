"""A minimal reader for the weights (initializers) of an ONNX file, with no dependency on ``onnx``.

ONNX files are protocol buffers: ``ModelProto.graph`` (field 7) holds ``GraphProto.initializer``
(field 5), each a ``TensorProto`` with ``dims`` (1), ``data_type`` (2), ``float_data`` (4),
``name`` (8) and ``raw_data`` (9). Only float32 tensors are decoded; others are skipped.
"""
from __future__ import annotations

import numpy as np

__all__ = ["read_initializers"]

_FLOAT = 1


def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated protobuf varint")
        if shift > 63:
            raise ValueError("malformed protobuf varint (longer than 10 bytes)")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


_FIXED = {1: 8, 5: 4}  # wire type -> byte length of fixed64 / fixed32


def _fields(buf: memoryview):
    """Yield ``(field_number, wire_type, value)``; value is an int or a memoryview."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire in _FIXED or wire == 2:
            if wire == 2:
                n, pos = _varint(buf, pos)
            else:
                n = _FIXED[wire]
            if pos + n > end:
                raise ValueError("truncated protobuf field")
            val, pos = buf[pos:pos + n], pos + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, val


def _tensor(buf: memoryview) -> tuple[str, np.ndarray | None]:
    dims: list[int] = []
    dtype, name, raw, floats = 0, "", None, []
    for field, wire, val in _fields(buf):
        if field == 1:
            if wire == 2:  # packed
                p = 0
                while p < len(val):
                    d, p = _varint(val, p)
                    dims.append(d)
            elif wire == 0:
                dims.append(val)
            else:
                raise ValueError(f"malformed dims (wire type {wire})")
        elif field == 2 and wire == 0:
            dtype = val
        elif field == 4:
            if isinstance(val, int):
                raise ValueError("malformed float_data (varint)")
            floats.append(np.frombuffer(val, "<f4"))  # packed (wire 2) or one fixed32 (wire 5)
        elif field == 8 and wire == 2:
            name = bytes(val).decode()
        elif field == 9 and wire == 2:
            raw = bytes(val)
    if dtype != _FLOAT:
        return name, None
    arr = np.frombuffer(raw, "<f4") if raw is not None else (np.concatenate(floats) if floats else np.zeros(0, "<f4"))
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"initializer {name!r}: {arr.size} floats for dims {dims}")
    return name, arr.reshape(dims).astype(np.float32)


def read_initializers(data: bytes) -> dict[str, np.ndarray]:
    """Return ``{name: float32 array}`` for every float initializer in the ONNX model ``data``."""
    out: dict[str, np.ndarray] = {}
    model = memoryview(data)
    for field, wire, graph in _fields(model):
        if field == 7 and wire == 2:
            for gfield, gwire, init in _fields(graph):
                if gfield == 5 and gwire == 2:
                    name, arr = _tensor(init)
                    if arr is not None:
                        out[name] = arr
    if not out:
        raise ValueError("no float initializers found: not an ONNX model?")
    return out
