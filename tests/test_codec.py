"""Tests for raysplit.codec: round trips, exact sizes, int8 bound, and malformed input."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np
import pytest

from raysplit import codec
from raysplit.codec import encodings
from raysplit.codec import (
    COMPRESSIONS,
    ENCODINGS,
    KIND_ACTIVATION,
    KIND_GRADIENT,
    CodecConfig,
    CodecError,
    Message,
    decode,
    encode,
    encoded_size,
    payload_nbytes,
)

SHAPES = [(8, 16), (4, 8, 5, 5), (3, 6, 2, 3, 4)]
BUDGETS = [1, 4, "all_permuted", None]  # None: indices=None (all channels, in order)
ROLES = [  # (kind, with_labels)
    (KIND_ACTIVATION, True),
    (KIND_ACTIVATION, False),
    (KIND_GRADIENT, False),
]


def _relu_like(rng, shape):
    x = rng.standard_normal(shape).astype(np.float32) * rng.uniform(0.1, 5.0, size=(1, shape[1]) + (1,) * (len(shape) - 2)).astype(np.float32)
    return np.maximum(x, 0, out=x)


def _make(rng, shape, budget):
    """(values, indices) for the budget; indices deliberately not sorted."""
    c = shape[1]
    if budget is None:
        return _relu_like(rng, shape), None
    b = c if budget == "all_permuted" else budget
    idx = rng.permutation(c)[:b]
    if b > 1 and np.all(np.diff(idx) > 0):  # make sure the order is not sorted
        idx = idx[::-1].copy()
    vals = rng.standard_normal((shape[0], b, *shape[2:])).astype(np.float32)
    return vals, idx


def _int8_scale(x):
    """Per-channel scale over axis 1, as the codec defines it."""
    axes = (0,) + tuple(range(2, x.ndim))
    return np.abs(x.astype(np.float64)).max(axis=axes) / 127.0


def _uint8_scale(x):
    """The per-tensor step of uint8: the range widened to include 0, over 255."""
    x = x.astype(np.float64)
    return (max(x.max(), 0.0) - min(x.min(), 0.0)) / 255.0


def _check_values(enc, x, got):
    assert got.dtype == np.float32 and got.shape == x.shape
    if enc == "float32":
        np.testing.assert_array_equal(got, x.astype(np.float32))
    elif enc == "float16":
        np.testing.assert_array_equal(got, x.astype(np.float16).astype(np.float32))
    elif enc == "uint8":
        err = np.abs(x.astype(np.float64) - got.astype(np.float64))
        assert np.all(err <= _uint8_scale(x) * (0.5 + 1e-4))
    else:
        scale = _int8_scale(x)
        bshape = (1, -1) + (1,) * (x.ndim - 2)
        err = np.abs(x.astype(np.float64) - got.astype(np.float64))
        assert np.all(err <= scale.reshape(bshape) * (0.5 + 1e-4))


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("budget", BUDGETS, ids=str)
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("role", ROLES, ids=["act+labels", "act", "grad"])
def test_round_trip(shape, budget, encoding, compression, role):
    kind, with_labels = role
    rng = np.random.default_rng(abs(hash((shape, str(budget), encoding, compression, role))) % 2**32)
    vals, idx = _make(rng, shape, budget)
    labels = rng.integers(0, 10, size=shape[0]) if with_labels else None
    cfg = CodecConfig(encoding, compression)
    step, client = 2**63 + 12345, 2**32 - 1
    buf = encode(vals, idx, shape, cfg, kind=kind, labels=labels, step=step, client_id=client)
    assert isinstance(buf, bytes)

    m = decode(buf)
    assert isinstance(m, Message)
    assert m.kind == kind and m.step == step and m.client_id == client
    assert m.shape == shape
    want_idx = np.arange(shape[1]) if idx is None else idx
    assert m.indices.dtype == np.int64
    np.testing.assert_array_equal(m.indices, want_idx)  # order preserved, not sorted
    if with_labels:
        assert m.labels.dtype == np.int64
        np.testing.assert_array_equal(m.labels, labels)
    else:
        assert m.labels is None
    _check_values(encoding, vals, m.values)
    assert m.values.flags.writeable and m.values.flags.c_contiguous

    if compression == "none":
        n_sel = vals.shape[1]
        assert len(buf) == encoded_size(shape, n_sel, cfg, with_labels=with_labels, all_channels=idx is None)
    else:
        with pytest.raises(ValueError, match="data-dependent"):
            encoded_size(shape, vals.shape[1], cfg, with_labels=with_labels)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_all_channels_flag_sends_no_indices(encoding):
    rng = np.random.default_rng(1)
    shape = (4, 10, 3, 3)
    x = rng.standard_normal(shape).astype(np.float32)
    cfg = CodecConfig(encoding)
    implicit = encode(x, None, shape, cfg)
    explicit = encode(x, np.arange(10), shape, cfg)
    assert len(explicit) - len(implicit) == 10 * 2  # uint16 indices
    a, b = decode(implicit), decode(explicit)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.dense(), a.values)


def test_overhead_within_5_percent():
    shape = (16, 128, 8, 8)
    cfg = CodecConfig("float32")
    rng = np.random.default_rng(2)
    x = _relu_like(rng, (16, 4, 8, 8))
    idx = np.array([97, 3, 64, 12])
    payload = payload_nbytes(16, 4, (8, 8), "float32")
    assert payload == 16 * 4 * 64 * 4
    for labels in (None, np.arange(16)):
        buf = encode(x, idx, shape, cfg, labels=labels)
        assert len(buf) == encoded_size(shape, 4, cfg, with_labels=labels is not None)
        assert len(buf) <= 1.05 * payload, (len(buf), payload)


def test_encoded_size_formula():
    cfg = CodecConfig("int8")
    # 32 header + 16 dims + 2*4 indices + 4*4 scales + 4*16 labels + 20 lengths/crc + payload
    assert encoded_size((16, 128, 8, 8), 4, cfg, with_labels=True) == 32 + 16 + 8 + 16 + 64 + 20 + 4096
    assert encoded_size((16, 128, 8, 8), 128, cfg, with_labels=False, all_channels=True) == (
        32 + 16 + 4 * 128 + 20 + 16 * 128 * 64
    )
    with pytest.raises(ValueError, match="all_channels"):
        encoded_size((16, 128, 8, 8), 4, cfg, with_labels=False, all_channels=True)
    with pytest.raises(ValueError, match="out of range"):
        encoded_size((16, 128, 8, 8), 129, cfg, with_labels=False)


def test_payload_nbytes():
    assert payload_nbytes(16, 4, (8, 8), "float32") == 16384
    assert payload_nbytes(16, 4, (8, 8), "float16") == 8192
    assert payload_nbytes(16, 4, (8, 8), "int8") == 4096
    assert payload_nbytes(5, 3, (), "float32") == 60
    with pytest.raises(ValueError, match="allowed"):
        payload_nbytes(1, 1, (), "bfloat16")


def test_wide_indices_for_many_channels():
    c = 70_000
    shape = (2, c)
    idx = np.array([69_999, 0, 65_536])
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    cfg = CodecConfig()
    buf = encode(x, idx, shape, cfg)
    assert len(buf) == encoded_size(shape, 3, cfg, with_labels=False)
    assert len(buf) == 32 + 8 + 3 * 4 + 20 + 24
    m = decode(buf)
    np.testing.assert_array_equal(m.indices, idx)
    d = m.dense()
    assert d.shape == shape
    np.testing.assert_array_equal(d[:, 69_999], x[:, 0])
    np.testing.assert_array_equal(d[:, 65_536], x[:, 2])
    assert np.count_nonzero(d) == np.count_nonzero(x)


def test_zero_channels_sent():
    shape = (3, 5, 2, 2)
    for enc in ENCODINGS:
        for comp in COMPRESSIONS:
            buf = encode(np.zeros((3, 0, 2, 2), np.float32), np.array([], dtype=np.int64), shape, CodecConfig(enc, comp))
            m = decode(buf)
            assert m.values.shape == (3, 0, 2, 2) and m.indices.shape == (0,)
            np.testing.assert_array_equal(m.dense(), np.zeros(shape, np.float32))


# ----------------------------------------------------------------------------- semantics


def test_index_order_preserved_and_dense_scatter():
    shape = (2, 6, 2, 2)
    idx = np.array([5, 1, 3])
    x = np.stack([np.full((2, 2, 2), v, np.float32) for v in (50.0, 10.0, 30.0)], axis=1)
    m = decode(encode(x, idx, shape, CodecConfig()))
    assert m.indices.tolist() == [5, 1, 3]
    d = m.dense()
    assert d.dtype == np.float32 and d.shape == shape
    want = np.zeros(shape, np.float32)
    want[:, 5], want[:, 1], want[:, 3] = 50.0, 10.0, 30.0
    np.testing.assert_array_equal(d, want)
    # prefix of importance-ordered slices: the first k indices/values belong together
    np.testing.assert_array_equal(m.values[:, :2], x[:, :2])


def test_int8_error_bound_per_channel():
    rng = np.random.default_rng(3)
    n, b = 32, 8
    x = rng.standard_normal((n, b, 6, 6)).astype(np.float32)
    x *= np.array([1e-3, 1.0, 1e3, 1e30, 1.0, 7.0, 1.0, 1.0], np.float32)[None, :, None, None]
    x[:, 4] = 0.0  # all-zero channel -> exact zeros
    x[:, 6] = np.abs(x[:, 6])  # one-signed channel
    x[:, 7] = rng.standard_normal((n, 6, 6)).astype(np.float32) * np.float32(1e-40)  # subnormal
    shape = (n, 12, 6, 6)
    m = decode(encode(x, np.arange(b)[::-1].copy(), shape, CodecConfig("int8")))
    scale = _int8_scale(x)
    err = np.abs(x.astype(np.float64) - m.values)
    # float32 rounding of q * scale: relative 1e-4, plus one subnormal step for channel 7
    assert np.all(err <= scale[None, :, None, None] * (0.5 + 1e-4) + 2.0**-149)
    np.testing.assert_array_equal(m.values[:, 4], 0.0)
    # the extreme of each channel is reproduced almost exactly (q = +-127)
    for ch in range(b):
        if ch != 4:
            j = np.unravel_index(np.argmax(np.abs(x[:, ch])), x[:, ch].shape)
            assert abs(m.values[:, ch][j] - x[:, ch][j]) <= abs(x[:, ch][j]) * 1e-5 + 2.0**-149


def test_int8_tiny_channel():
    # max|x| / 127 underflows float32: the codec falls back to the smallest subnormal scale
    x = np.array([[[2.0**-148], [-(2.0**-149)]], [[2.0**-147], [0.0]]], np.float32).reshape(2, 2, 1)
    m = decode(encode(x, None, (2, 2, 1), CodecConfig("int8")))
    np.testing.assert_array_equal(m.values, x)


def test_int8_huge_values():
    x = np.array([[[3.0e38], [-3.4e38]]], np.float32).reshape(1, 2, 1)
    m = decode(encode(x, None, (1, 2, 1), CodecConfig("int8")))
    assert np.all(np.isfinite(m.values))
    np.testing.assert_allclose(m.values, x, rtol=1e-5)


def test_input_dtypes():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 3, 2)).astype(np.float64)
    for enc in ENCODINGS:
        for dt in (np.float64, np.float32, np.float16):
            xv = x.astype(dt)
            m = decode(encode(xv, np.array([2, 0, 1]), (4, 3, 2), CodecConfig(enc)))
            if enc == "float16":
                np.testing.assert_array_equal(m.values, xv.astype(np.float32).astype(np.float16).astype(np.float32))
            elif enc == "float32":
                np.testing.assert_array_equal(m.values, xv.astype(np.float32))
            else:
                _check_values(enc, xv.astype(np.float32), m.values)
    # non-contiguous input
    big = rng.standard_normal((4, 6, 2)).astype(np.float32)
    m = decode(encode(big[:, ::2], np.array([4, 0, 2]), (4, 6, 2), CodecConfig()))
    np.testing.assert_array_equal(m.values, big[:, ::2])


def test_float16_fast_cast_is_bit_exact():
    bits = np.arange(0, 2**32, 4099, dtype=np.uint64).astype(np.uint32)
    near = np.arange(0x33000000, 0x47800400, 97, dtype=np.uint32)  # half subnormal .. overflow
    edges = np.array([0x477FEFFF, 0x477FF000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x00000001, 0x38800000], np.uint32)
    for b in (bits, near, near | np.uint32(0x80000000), edges):
        x = b.view(np.float32)
        with np.errstate(all="ignore"):
            want = x.astype(np.float16).view(np.uint16)
        got = encodings.f32_to_f16_bits(x)
        nan = np.isnan(x)
        np.testing.assert_array_equal(got[~nan], want[~nan])
        assert np.all(np.isnan(got[nan].view(np.float16)))
    table = encodings.F16_TO_F32
    h = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    fin = np.isfinite(h)
    np.testing.assert_array_equal(table[fin], h[fin].astype(np.float32))


def test_float16_overflow():
    x = np.array([[1.0, 65504.0], [-65519.0, 2.0]], np.float32)
    np.testing.assert_array_equal(decode(encode(x, None, (2, 2), CodecConfig("float16"))).values, x.astype(np.float16).astype(np.float32))
    y = x.copy()
    y[1, 0] = -70000.0
    with pytest.raises(CodecError, match="float16 range"):
        encode(y, None, (2, 2), CodecConfig("float16"))
    m = decode(encode(y, None, (2, 2), CodecConfig("float16", allow_nonfinite=True)))
    assert m.values[1, 0] == -np.inf and m.values[0, 1] == 65504.0


@pytest.mark.parametrize("encoding", ["float32", "float16"])
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_nonfinite_policy(encoding, compression):
    x = np.ones((3, 2, 2), np.float32)
    x[0, 1, 0] = np.nan
    x[2, 0, 1] = np.inf
    x[1, 1, 1] = -np.inf
    with pytest.raises(CodecError, match="NaN"):
        encode(x, None, (3, 2, 2), CodecConfig(encoding, compression))
    m = decode(encode(x, None, (3, 2, 2), CodecConfig(encoding, compression, allow_nonfinite=True)))
    np.testing.assert_array_equal(np.isnan(m.values), np.isnan(x))
    np.testing.assert_array_equal(m.values[~np.isnan(x)], x[~np.isnan(x)])


@pytest.mark.parametrize("enc", ["int8", "uint8"])
def test_int8_rejects_nonfinite_even_if_allowed(enc):
    x = np.ones((2, 2), np.float32)
    x[1, 1] = np.nan
    for allow in (False, True):
        with pytest.raises(CodecError, match=f"{enc} encoding cannot represent them"):
            encode(x, None, (2, 2), CodecConfig(enc, allow_nonfinite=allow))


def test_float64_beyond_float32_range_rejected():
    x = np.array([[1e300, 1.0]])
    with pytest.raises(CodecError, match="float32 range"):
        encode(x, None, (1, 2), CodecConfig())


def test_decode_input_types_and_ownership():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    buf = encode(x, np.array([7, 2, 5]), (4, 8, 2, 2), CodecConfig(), labels=np.arange(4))
    ba = bytearray(buf)
    framed = b"xyz" + buf + b"tail"
    for src in (buf, ba, memoryview(buf), np.frombuffer(buf, np.uint8), memoryview(framed)[3:-4]):
        m = decode(src)
        np.testing.assert_array_equal(m.values, x)
    m = decode(ba)
    ba[:] = bytes(len(ba))  # the message must not alias the buffer
    np.testing.assert_array_equal(m.values, x)
    np.testing.assert_array_equal(m.indices, [7, 2, 5])
    np.testing.assert_array_equal(m.labels, np.arange(4))
    m.values[0, 0, 0, 0] = 1.0  # writeable
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.step = 3
    with pytest.raises(CodecError, match="bytes"):
        decode([1, 2, 3])
    with pytest.raises(CodecError, match="bytes"):
        decode("RSPL")


def test_config_as_spec_string():
    x = np.ones((2, 3), np.float32)
    assert encode(x, None, (2, 3), "int8+zstd:3") == encode(x, None, (2, 3), CodecConfig("int8", "zstd", 3))
    with pytest.raises(TypeError):
        encode(x, None, (2, 3), {"encoding": "int8"})


def test_step_and_client_id_match_gradient_to_activation():
    x = np.ones((2, 1, 3), np.float32)
    act = decode(encode(x, [4], (2, 8, 3), CodecConfig("int8", "zstd"), step=41, client_id=9, labels=np.array([1, 2])))
    grad = decode(encode(-x, act.indices, act.shape, CodecConfig("float16", "lz4"), kind=KIND_GRADIENT, step=act.step, client_id=act.client_id))
    assert (grad.kind, grad.step, grad.client_id) == (KIND_GRADIENT, 41, 9)
    np.testing.assert_array_equal(grad.indices, [4])


# ----------------------------------------------------------------------------- encode validation


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(values=np.zeros((3, 2, 4, 4))), "does not match shape"),  # N mismatch
        (dict(values=np.zeros((2, 2, 4, 5))), "does not match shape"),  # spatial mismatch
        (dict(values=np.zeros((2, 2, 4))), "ndim"),
        (dict(indices=np.array([1, 2, 3])), "does not match B"),
        (dict(indices=np.array([1, 1])), "repeated"),
        (dict(indices=np.array([1, 8])), "out of range"),
        (dict(indices=np.array([-1, 2])), "out of range"),
        (dict(indices=np.array([1.0, 2.0])), "integers"),
        (dict(indices=None), "all C=8"),
        (dict(labels=np.arange(3)), "labels shape"),
        (dict(labels=np.zeros(2)), "labels dtype"),
        (dict(labels=np.array([0, 2**40])), "int32"),
        (dict(kind=3), "kind"),
        (dict(step=-1), "step"),
        (dict(step=2**64), "step"),
        (dict(client_id=2**32), "client_id"),
        (dict(values=np.zeros((2, 2, 4, 4), np.int32)), "dtype"),
        (dict(shape=(2,)), "ndim"),
        (dict(shape=(2, 0, 4, 4)), "dim outside"),
    ],
)
def test_encode_validation(kwargs, match):
    args = dict(values=np.zeros((2, 2, 4, 4), np.float32), indices=np.array([3, 1]), shape=(2, 8, 4, 4))
    kw = dict(kind=KIND_ACTIVATION, labels=None, step=0, client_id=0)
    for k, v in kwargs.items():
        (args if k in args else kw)[k] = v
    with pytest.raises(ValueError, match=match):
        encode(args["values"], args["indices"], args["shape"], CodecConfig(), **kw)


# ----------------------------------------------------------------------------- malformed input


SHAPE = (3, 10, 2, 2)
H = codec.HEADER_SIZE  # 32 in format version 2


def _valid(enc="float32", comp="none", labels=True, idx=(7, 2, 9), allow=False):
    x = np.linspace(-1, 1, 3 * len(idx) * 4, dtype=np.float32).reshape(3, len(idx), 2, 2)
    lab = np.array([1, 0, 4]) if labels else None
    return bytearray(encode(x, np.array(idx), SHAPE, CodecConfig(enc, comp, allow_nonfinite=allow), labels=lab))


def _body_len(buf):
    """Stored body length, read from the lengths field (walks the layout like decode)."""
    ndim = buf[9]
    flags = buf[8]
    b = struct.unpack_from("<I", buf, 24)[0]
    n = struct.unpack_from("<I", buf, H)[0]
    c = struct.unpack_from("<I", buf, H + 4)[0]
    off = H + 4 * ndim
    if not flags & codec.FLAG_ALL_CHANNELS:
        off += b * (4 if c > 65535 else 2)
    if buf[6] == 2:
        off += 4 * b
    if flags & codec.FLAG_HAS_LABELS:
        off += 4 * n
    return struct.unpack_from("<Q", buf, off + 8)[0]


def _recrc(buf):
    """Rewrite the CRC so a deliberate edit reaches the semantic checks."""
    body = _body_len(buf)
    crc_off = len(buf) - body - 4
    crc = zlib.crc32(bytes(buf[crc_off + 4 :]), zlib.crc32(bytes(buf[:crc_off])))
    struct.pack_into("<I", buf, crc_off, crc)
    return buf


IDX_OFF = H + 4 * len(SHAPE)


def test_codec_error_is_value_error():
    assert issubclass(CodecError, ValueError)


def test_helpers_agree_with_codec():
    buf = _valid()
    assert bytes(_recrc(bytearray(buf))) == bytes(buf)
    assert decode(buf).indices.tolist() == [7, 2, 9]


@pytest.mark.parametrize("comp", COMPRESSIONS)
@pytest.mark.parametrize("enc", ENCODINGS)
def test_every_truncation_raises(enc, comp):
    buf = bytes(_valid(enc, comp))
    for cut in range(len(buf)):
        with pytest.raises(CodecError):
            decode(buf[:cut])


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda b: b.__setitem__(slice(0, 4), b"RSPX"), "bad magic"),
        (lambda b: b.__setitem__(4, 4), r"unsupported format version 4; supported: 1, 2, 3"),
        (lambda b: b.__setitem__(4, 0), r"unsupported format version 0; supported: 1, 2, 3"),
        (lambda b: b.__setitem__(5, 7), r"unknown message kind 7; allowed: 1 \(activation\), 2 \(gradient\)"),
        (lambda b: b.__setitem__(6, 4), r"unknown encoding id 4 in format version 3; allowed: 0 \(float32\), 1 \(float16\), 2 \(int8\), 3 \(uint8\)"),
        (lambda b: b.__setitem__(7, 9), r"unknown compression id 9; allowed: 0 \(none\), 1 \(lz4\), 2 \(zstd\)"),
        (lambda b: b.__setitem__(8, b[8] | 0x40), "unknown flag bits 0x40"),
        (lambda b: b.__setitem__(9, 1), "ndim 1 not allowed"),
        (lambda b: b.__setitem__(9, 200), "ndim 200 not allowed"),
    ],
)
def test_bad_header_fields(edit, match):
    buf = _valid()
    edit(buf)
    with pytest.raises(CodecError, match=match):
        decode(buf)


def _set_index(buf, pos, value):
    struct.pack_into("<H", buf, IDX_OFF + 2 * pos, value)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda b: _set_index(b, 1, 10), "channel index 10 out of range; allowed: 0..9"),
        (lambda b: _set_index(b, 2, 7), "channel index 7 repeated"),
        (lambda b: struct.pack_into("<I", b, H + 4, 2), r"B=3 channels sent but C=2"),  # C < B
        (lambda b: struct.pack_into("<I", b, H + 8, 3), "raw payload length"),  # H changed
        (lambda b: struct.pack_into("<I", b, H, 0), "zero dim"),
        (lambda b: b.__setitem__(8, b[8] | codec.FLAG_WIDE_INDICES), "truncated|wide_indices|raw payload"),
        (lambda b: b.__setitem__(8, b[8] | codec.FLAG_ALL_CHANNELS), "all_channels|raw payload|stored length|truncated"),
    ],
)
def test_bad_semantics_with_valid_crc(edit, match):
    buf = _valid()
    edit(buf)
    try:
        _recrc(buf)
    except struct.error:
        pass  # layout no longer parseable by the helper: decode must still fail cleanly
    with pytest.raises(CodecError, match=match):
        decode(buf)


def test_shape_length_mismatch():
    buf = _valid()
    # claim one more sample: labels and payload no longer fit -> truncated / length error
    struct.pack_into("<I", buf, H, 4)
    with pytest.raises(CodecError, match="truncated|length|CRC"):
        decode(buf)
    buf = _valid()
    raw_off = len(buf) - _body_len(buf) - 20
    struct.pack_into("<Q", buf, raw_off, 12345)
    _recrc(buf)
    with pytest.raises(CodecError, match="raw payload length 12345"):
        decode(buf)
    buf = _valid()
    struct.pack_into("<Q", buf, raw_off + 8, _body_len(buf) + 100)  # stored length beyond buffer
    with pytest.raises(CodecError, match="truncated"):
        decode(buf)


@pytest.mark.parametrize("comp", COMPRESSIONS)
def test_crc_mismatch(comp):
    for pos in (5 + 0 * 1, IDX_OFF, -1, -5):
        buf = _valid("float16", comp)
        if pos == 5 + 0:
            pos = 12  # client_id byte: structurally harmless, only the CRC notices
        buf[pos] ^= 0x01
        with pytest.raises(CodecError, match="CRC mismatch"):
            decode(buf)


@pytest.mark.parametrize("comp", ["lz4", "zstd"])
def test_decompression_failure(comp):
    buf = _valid("float32", comp)
    body = _body_len(buf)
    start = len(buf) - body
    buf[start : start + 8] = b"\xff" * 8  # wreck the frame header
    _recrc(buf)
    with pytest.raises(CodecError, match=f"{comp} decompression failed"):
        decode(buf)


@pytest.mark.parametrize("comp", ["lz4", "zstd"])
def test_forged_huge_raw_length(comp):
    # a tiny compressed message that claims ~4 GB once decompressed
    buf = bytearray(encode(np.zeros((1, 1), np.float32), None, (1, 1), CodecConfig("float32", comp)))
    struct.pack_into("<II", buf, H, 2**15, 2**15)  # N = C = 32768
    struct.pack_into("<I", buf, 24, 2**15)  # B = C
    with pytest.raises(CodecError):
        decode(buf)  # (layout changed -> the CRC or the ratio check fires, never an allocation)
    x = np.zeros((64, 64), np.float32)
    buf = bytearray(encode(x, None, (64, 64), CodecConfig("float32", comp)))
    raw_off = len(buf) - _body_len(buf) - 20
    struct.pack_into("<II", buf, H, 2**22, 2**10)
    struct.pack_into("<I", buf, 24, 2**10)
    struct.pack_into("<Q", buf, raw_off, 2**22 * 2**10 * 4)
    _recrc(buf)
    with pytest.raises(CodecError, match="maximum ratio"):
        decode(buf)


@pytest.mark.parametrize("enc", ["float32", "float16"])
def test_nonfinite_payload_rejected_unless_flagged(enc):
    buf = _valid(enc)
    body = _body_len(buf)
    start = len(buf) - body
    nan = np.array([np.nan], np.float32 if enc == "float32" else np.float16).tobytes()
    buf[start : start + len(nan)] = nan
    _recrc(buf)
    with pytest.raises(CodecError, match="NaN/Inf"):
        decode(buf)
    buf[8] |= codec.FLAG_ALLOW_NONFINITE
    _recrc(buf)
    assert np.isnan(decode(buf).values.reshape(-1)[0])


def test_bad_int8_scales():
    for bad in (np.nan, np.inf, -1.0):
        buf = _valid("int8")
        struct.pack_into("<f", buf, IDX_OFF + 3 * 2 + 4, bad)
        _recrc(buf)
        with pytest.raises(CodecError, match="scales"):
            decode(buf)


@pytest.mark.parametrize("comp", COMPRESSIONS)
def test_trailing_garbage(comp):
    buf = bytes(_valid("int8", comp))
    for extra in (b"\x00", b"RSPL" * 10):
        with pytest.raises(CodecError, match="trailing"):
            decode(buf + extra)


def test_garbage_and_empty():
    for junk in (b"", b"R", b"RSPL", b"\x00" * 27, b"\x00" * 100, b"RSPL" + b"\x01" * 200):
        with pytest.raises(CodecError):
            decode(junk)


def test_fuzz_mutations_only_raise_codec_error():
    rng = np.random.default_rng(6)
    seeds = [bytes(_valid(e, c)) for e in ENCODINGS for c in COMPRESSIONS]
    seeds.append(bytes(_valid("int8", "none", labels=False, idx=tuple(range(10)))))
    for _ in range(3000):
        buf = bytearray(seeds[rng.integers(len(seeds))])
        for _ in range(rng.integers(1, 4)):
            buf[rng.integers(len(buf))] = rng.integers(256)
        if rng.random() < 0.5:  # make the edit past the CRC so it reaches the deeper checks
            try:
                _recrc(buf)
            except (struct.error, IndexError):
                pass
        try:
            m = decode(buf)
        except CodecError:
            continue
        assert m.values.dtype == np.float32  # a decodable mutation is still a coherent message
        assert m.values.shape == (m.shape[0], len(m.indices), *m.shape[2:])


# ----------------------------------------------------------------------------- CodecConfig


def test_config_defaults_and_validation():
    cfg = CodecConfig()
    assert (cfg.encoding, cfg.compression, cfg.level, cfg.allow_nonfinite) == ("float32", "none", None, False)
    with pytest.raises(ValueError, match=r"unknown encoding 'bf16'; allowed: float32, float16, int8"):
        CodecConfig("bf16")
    with pytest.raises(ValueError, match=r"unknown compression 'gzip'; allowed: none, lz4, zstd"):
        CodecConfig("float32", "gzip")
    with pytest.raises(ValueError, match="level"):
        CodecConfig("float32", "none", level=3)
    with pytest.raises(ValueError, match="out of range"):
        CodecConfig("int8", "zstd", level=99)
    with pytest.raises(ValueError, match="level must be an int"):
        CodecConfig("int8", "zstd", level=True)
    with pytest.raises(ValueError, match="allow_nonfinite"):
        CodecConfig(allow_nonfinite="yes")
    assert CodecConfig("int8", "zstd", level=np.int64(5)).level == 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.encoding = "int8"


@pytest.mark.parametrize(
    "spec, want",
    [
        ("float32", CodecConfig("float32", "none")),
        ("float16+lz4", CodecConfig("float16", "lz4")),
        ("int8+zstd", CodecConfig("int8", "zstd")),
        ("int8+zstd:3", CodecConfig("int8", "zstd", 3)),
        ("int8+zstd:-1", CodecConfig("int8", "zstd", -1)),
        (" INT8+ZSTD:3 ", CodecConfig("int8", "zstd", 3)),
        ("float32+none", CodecConfig("float32", "none")),
    ],
)
def test_parse(spec, want):
    got = CodecConfig.parse(spec)
    assert got == want
    assert CodecConfig.parse(got.spec) == got


@pytest.mark.parametrize(
    "spec, match",
    [
        ("", "expected"),
        ("float64", "unknown encoding 'float64'"),
        ("int8+gzip", "unknown compression 'gzip'"),
        ("int8+zstd:x", "bad compression level 'x'"),
        ("int8+zstd:999", "out of range"),
        ("float32:3", "unknown encoding"),
    ],
)
def test_parse_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        CodecConfig.parse(spec)


@pytest.mark.parametrize("spec", ["float16+lz4:1", "int8+zstd:1", "int8+zstd:19", "float32+zstd:-5"])
def test_levels_round_trip(spec):
    x = np.maximum(np.random.default_rng(7).standard_normal((8, 4, 4, 4)), 0).astype(np.float32)
    m = decode(encode(x, np.array([3, 0, 2, 1]), (8, 4, 4, 4), CodecConfig.parse(spec)))
    _check_values(CodecConfig.parse(spec).encoding, x, m.values)


# ----------------------------------------------------------------------------- versions, tenant, cut

# Written by the format-version-1 encoder (raysplit before the tenant/cut fields):
# float32, indices [3, 0] of C=5, labels [1, 4], step 9, client 5; and int8+zstd gradient.
V1_FLOAT32 = bytes.fromhex(
    "5253504c010100000103000005000000090000000000000002000000020000000500000002000000"
    "030000000100000004000000200000000000000020000000000000002be10082000040c0000000c0"
    "000080bf000000000000803f000000400000404000008040"
)
V1_INT8_ZSTD = bytes.fromhex(
    "5253504c0102020200030000060000000a0000000000000002000000020000000500000002000000"
    "030000000683c13c0402013d08000000000000001100000000000000aeee66ce28b52ffd20084100"
    "0081abe0002a555f7f"
)


def test_version_1_messages_still_decode():
    x = np.arange(8, dtype=np.float32).reshape(2, 2, 2) - 3
    m = decode(V1_FLOAT32)
    assert (m.version, m.tenant, m.cut, m.step, m.client_id) == (1, 0, 0, 9, 5)
    assert m.shape == (2, 5, 2) and m.indices.tolist() == [3, 0] and m.labels.tolist() == [1, 4]
    np.testing.assert_array_equal(m.values, x)
    g = decode(V1_INT8_ZSTD)
    assert (g.version, g.kind, g.step, g.client_id, g.labels) == (1, KIND_GRADIENT, 10, 6, None)
    _check_values("int8", x, g.values)


def test_version_1_reserved_field_must_be_zero():
    buf = bytearray(V1_FLOAT32)
    buf[10] = 1
    crc_off = len(buf) - 32 - 4  # body is 2*2*2 float32 = 32 bytes
    struct.pack_into("<I", buf, crc_off, zlib.crc32(bytes(buf[crc_off + 4 :]), zlib.crc32(bytes(buf[:crc_off]))))
    with pytest.raises(CodecError, match="reserved header field is 1; must be 0 in format version 1"):
        decode(buf)


def test_encoder_writes_the_current_version():
    m = decode(bytes(_valid()))
    assert codec.FORMAT_VERSION == 3 and codec.SUPPORTED_VERSIONS == (1, 2, 3)
    assert m.version == 3 and (m.tenant, m.cut) == (0, 0)


@pytest.mark.parametrize("tenant, cut", [(0, 0), (1, 1), (2**32 - 1, 2**16 - 1), (123456, 2)])
def test_tenant_and_cut_round_trip(tenant, cut):
    x = np.ones((2, 3, 2), np.float32)
    for comp in COMPRESSIONS:
        buf = encode(x, np.array([4, 0, 2]), (2, 5, 2), CodecConfig("float16", comp), tenant=tenant, cut=cut,
                     kind=KIND_GRADIENT, step=3, client_id=7)
        m = decode(buf)
        assert (m.tenant, m.cut, m.step, m.client_id, m.kind) == (tenant, cut, 3, 7, KIND_GRADIENT)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"tenant": -1}, r"tenant -1 out of range; allowed: 0..4294967295"),
        ({"tenant": 2**32}, r"tenant 4294967296 out of range"),
        ({"cut": 2**16}, r"cut 65536 out of range; allowed: 0..65535"),
        ({"cut": -2}, r"cut -2 out of range"),
    ],
)
def test_tenant_and_cut_range_errors(kw, match):
    with pytest.raises(CodecError, match=match):
        encode(np.ones((1, 1), np.float32), None, (1, 1), CodecConfig(), **kw)


def test_crc_covers_tenant_and_cut():
    for pos in (10, 28):  # cut, tenant
        buf = _valid()
        buf[pos] ^= 0x01
        with pytest.raises(CodecError, match="CRC mismatch"):
            decode(buf)
