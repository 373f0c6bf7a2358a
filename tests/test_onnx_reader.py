"""Tests of the dependency-free ONNX initializer reader, on protobufs encoded by hand here."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from perceptlib.sources.onnx_reader import read_initializers

FLOAT, INT64 = 1, 7


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def vint(field: int, n: int) -> bytes:
    return key(field, 0) + varint(n)


def ld(field: int, payload: bytes) -> bytes:  # length-delimited
    return key(field, 2) + varint(len(payload)) + payload


def tensor(name: str, arr: np.ndarray, how: str, packed_dims: bool = True) -> bytes:
    dims = b"".join(varint(d) for d in arr.shape)
    out = ld(1, dims) if packed_dims else b"".join(vint(1, d) for d in arr.shape)
    out += vint(2, FLOAT) + ld(8, name.encode())
    out += key(99, 1) + b"\x00" * 8  # an unknown fixed64 field, to be skipped
    flat = arr.astype("<f4").ravel()
    if how == "raw":
        out += ld(9, flat.tobytes())
    elif how == "packed":
        out += ld(4, flat.tobytes())
    else:  # one fixed32 field per value
        out += b"".join(key(4, 5) + struct.pack("<f", v) for v in flat)
    return out


def model(*initializers: bytes, extra_graph: bytes = b"") -> bytes:
    graph = ld(1, ld(4, b"Conv")) + ld(2, b"g") + extra_graph + b"".join(ld(5, t) for t in initializers)
    return vint(1, 8) + ld(2, b"hand-made") + ld(8, vint(2, 17)) + ld(7, graph)  # graph last


ARRAYS = {
    "block1_conv1/kernel": np.random.default_rng(0).standard_normal((3, 3, 3, 4)).astype(np.float32),
    "bias_packed": np.array([1.5, -2.0, 3.25, np.float32(1e-30)], np.float32),
    "fixed32": np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5,
    "long_dims": np.linspace(-1, 1, 200, dtype=np.float32).reshape(1, 200),  # 200 needs a 2-byte varint
    "scalar": np.array(7.0, np.float32),
}
HOW = {"block1_conv1/kernel": "raw", "bias_packed": "packed", "fixed32": "fixed32", "long_dims": "packed",
       "scalar": "raw"}


def full_model() -> bytes:
    ints = ld(1, varint(3)) + vint(2, INT64) + ld(8, b"shape_const") + ld(7, b"".join(varint(v) for v in (1, 2, 3)))
    inits = [tensor(k, v, HOW[k], packed_dims=i % 2 == 0) for i, (k, v) in enumerate(ARRAYS.items())]
    return model(inits[0], ints, *inits[1:])


def test_reads_float_initializers_and_skips_others():
    out = read_initializers(full_model())
    assert sorted(out) == sorted(ARRAYS)  # the int64 one is skipped
    for k, v in ARRAYS.items():
        assert out[k].dtype == np.float32 and out[k].shape == v.shape
        np.testing.assert_array_equal(out[k], v)
    assert out["block1_conv1/kernel"].flags.writeable  # a copy, not a view of the input bytes


def test_every_truncation_is_a_value_error():
    data = full_model()
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            read_initializers(data[:cut])


def test_inner_damage_is_a_value_error():
    good = tensor("w", ARRAYS["fixed32"], "raw")
    with pytest.raises(ValueError, match="truncated"):  # lengths consistent outside, cut inside the tensor
        read_initializers(model(good[:-3]))
    short = ld(1, varint(2) + varint(3)) + vint(2, FLOAT) + ld(8, b"w") + ld(9, b"\x00" * 20)
    with pytest.raises(ValueError, match="5 floats for dims"):
        read_initializers(model(short))


def test_no_initializers_is_a_value_error():
    ints = ld(1, varint(2)) + vint(2, INT64) + ld(8, b"i") + ld(7, varint(1) + varint(2))
    for data in (b"", model(), model(ints), vint(1, 8) + ld(2, b"no graph")):
        with pytest.raises(ValueError, match="no float initializers"):
            read_initializers(data)


@pytest.mark.parametrize("seed", range(20))
def test_random_bytes_never_crash_otherwise(seed):
    data = np.random.default_rng(seed).integers(0, 256, 300, dtype=np.uint8).tobytes()
    with pytest.raises(ValueError):
        read_initializers(data)
