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
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview):
    """Yield ``(field_number, wire_type, value)``; value is an int or a memoryview."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 1:
            val, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > end:
                raise ValueError("truncated protobuf field")
            val, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            val, pos = buf[pos:pos + 4], pos + 4
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
            else:
                dims.append(val)
        elif field == 2:
            dtype = val
        elif field == 4:
            floats.append(np.frombuffer(val, "<f4") if wire == 2 else np.frombuffer(val, "<f4"))
        elif field == 8:
            name = bytes(val).decode()
        elif field == 9:
            raw = bytes(val)
    if dtype != _FLOAT:
        return name, None
    arr = np.frombuffer(raw, "<f4") if raw is not None else (np.concatenate(floats) if floats else np.zeros(0, "<f4"))
    return name, arr.reshape(dims).copy()


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
