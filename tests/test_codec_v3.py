"""Codec format version 3: uint8 (affine per tensor), the channel-major layout with one CRC
per slice (a message cut short decodes to the slices that arrived whole), HMAC-SHA256 tags,
and version 2 messages that still decode."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch

from raysplit import codec
from raysplit.codec import (
    COMPRESSIONS,
    ENCODINGS,
    KIND_GRADIENT,
    CodecConfig,
    CodecError,
    decode,
    encode,
    encoded_size,
    slice_ends,
)

KEY = b"k" * 32
OTHER_KEY = b"o" * 32

# ----------------------------------------------------------------------------- version 2 still reads

# Written by the format-version-2 encoder (raysplit before v3): x = arange(8).reshape(2, 2, 2) - 3
# float32, indices [3, 0] of C=5, labels [1, 4], step 9, client 5, tenant 77, cut 2;
# int8+zstd gradient, tenant 2**32-1, cut 1; float16+lz4, all channels, tenant 5.
V2_FLOAT32 = bytes.fromhex(
    "5253504c0201000001030200050000000900000000000000020000004d000000020000000500000002000000"
    "03000000010000000400000020000000000000002000000000000000c3c044c0000040c0000000c0000080bf"
    "000000000000803f000000400000404000008040"
)
V2_INT8_ZSTD = bytes.fromhex(
    "5253504c0202020200030100060000000a0000000000000002000000ffffffff020000000500000002000000"
    "030000000683c13c0402013d080000000000000011000000000000007c4039b628b52ffd200841000081abe0"
    "002a555f7f"
)
V2_FLOAT16_LZ4 = bytes.fromhex(
    "5253504c0201010102030000070000000b00000000000000020000000500000002000000020000000200000010"
    "000000000000001f00000000000000e7c3af6404224d186040821000008000c200c000bc0000003c004000420044"
    "00000000"
)
X2 = np.arange(8, dtype=np.float32).reshape(2, 2, 2) - 3


def test_version_2_messages_still_decode():
    m = decode(V2_FLOAT32)
    assert (m.version, m.tenant, m.cut, m.step, m.client_id, m.layout) == (2, 77, 2, 9, 5, "sample")
    assert m.indices.tolist() == [3, 0] and m.labels.tolist() == [1, 4] and m.complete
    np.testing.assert_array_equal(m.values, X2)
    g = decode(V2_INT8_ZSTD)
    assert (g.version, g.kind, g.tenant, g.cut, g.labels) == (2, KIND_GRADIENT, 2**32 - 1, 1, None)
    assert np.abs(g.values - X2).max() <= 4 / 127 / 2 * 1.0001
    h = decode(V2_FLOAT16_LZ4)
    assert (h.version, h.tenant, h.indices.tolist()) == (2, 5, [0, 1])
    np.testing.assert_array_equal(h.values, X2)


def _recrc_v2(buf: bytearray, body_len: int) -> bytearray:
    crc_off = len(buf) - body_len - 4
    struct.pack_into("<I", buf, crc_off, zlib.crc32(bytes(buf[crc_off + 4 :]), zlib.crc32(bytes(buf[:crc_off]))))
    return buf


def test_version_2_cannot_claim_version_3_features():
    for bit in (codec.FLAG_CHANNEL_MAJOR, codec.FLAG_KEYED):
        buf = bytearray(V2_FLOAT32)
        buf[8] |= bit
        _recrc_v2(buf, 32)
        with pytest.raises(CodecError, match=f"unknown flag bits 0x{bit:02x} .* format version 2: 0x0f"):
            decode(buf)
    buf = bytearray(V2_FLOAT32)
    buf[6] = 3  # uint8 did not exist in version 2
    _recrc_v2(buf, 32)
    with pytest.raises(CodecError, match=r"unknown encoding id 3 in format version 2; allowed: 0 .* 2 \(int8\)$"):
        decode(buf)


# ----------------------------------------------------------------------------- uint8


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_uint8_matches_torch_quantize_per_tensor():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((8, 6, 5, 5)) * 3 + 1).astype(np.float32)
    q, scale, zp = codec.encodings.quantize_uint8(x)
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    assert scale == pytest.approx((hi - lo) / 255, rel=1e-6)
    assert zp == round(-lo / scale)
    tq = torch.quantize_per_tensor(torch.from_numpy(x), scale, zp, torch.quint8)
    diff = np.abs(tq.int_repr().numpy().astype(int) - q.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # torch multiplies by 1/scale: ties may differ
    m = decode(encode(x, np.arange(6)[::-1].copy(), (8, 9, 5, 5), CodecConfig("uint8")))
    assert np.abs(m.values - x).max() <= scale * (0.5 + 1e-4)


@pytest.mark.parametrize(
    "x",
    [
        np.maximum(np.random.default_rng(1).standard_normal((4, 3, 4)), 0).astype(np.float32),  # ReLU: min 0
        -np.abs(np.random.default_rng(2).standard_normal((4, 3, 4))).astype(np.float32) - 5,  # all negative
        np.full((2, 2, 3), 7.5, np.float32),  # constant, non-zero
        np.zeros((2, 2, 3), np.float32),  # all zero: scale 0, exact
        np.array([[[3.0e38], [-3.4e38]]], np.float32),  # the range overflows float32
        (np.random.default_rng(3).standard_normal((2, 2, 2)) * 1e-43).astype(np.float32),  # range underflows
    ],
    ids=["relu", "negative", "constant", "zero", "huge", "subnormal"],
)
def test_uint8_error_bound_and_exact_zero(x):
    x = x.copy()
    x.reshape(-1)[0] = 0.0  # an exact zero must survive
    m = decode(encode(x, None, x.shape, CodecConfig("uint8")))
    scale = (max(float(x.max()), 0.0) - min(float(x.min()), 0.0)) / 255.0
    assert np.all(np.isfinite(m.values))
    assert np.all(np.abs(m.values.astype(np.float64) - x) <= scale * (0.5 + 1e-4) + 2.0**-149)
    assert m.values.reshape(-1)[0] == 0.0
    if not x.any():
        np.testing.assert_array_equal(m.values, 0.0)


def test_uint8_sizes_and_params():
    shape, cfg = (16, 128, 8, 8), CodecConfig("uint8")
    # 32 header + 16 dims + 2*4 indices + 5 (scale, zero point) + 4*16 labels + 20 + payload
    assert encoded_size(shape, 4, cfg, with_labels=True) == 32 + 16 + 8 + 5 + 64 + 20 + 16 * 4 * 64
    x = np.maximum(np.random.default_rng(4).standard_normal((16, 4, 8, 8)), 0).astype(np.float32)
    buf = encode(x, np.array([9, 1, 5, 3]), shape, cfg, labels=np.arange(16))
    assert len(buf) == encoded_size(shape, 4, cfg, with_labels=True)
    assert codec.payload_nbytes(16, 4, (8, 8), "uint8") == 4096
    for spec in ("uint8+lz4", "uint8+zstd:3"):
        m = decode(encode(x, np.array([9, 1, 5, 3]), shape, spec))
        assert np.abs(m.values - x).max() <= float(x.max()) / 255 * 0.5001
    assert CodecConfig.parse("uint8+zstd") == CodecConfig("uint8", "zstd")


def _u8_message():
    x = np.linspace(0, 2, 12, dtype=np.float32).reshape(2, 3, 2)
    buf = bytearray(encode(x, np.array([4, 0, 2]), (2, 6, 2), CodecConfig("uint8")))
    params_off = codec.HEADER_SIZE + 3 * 4 + 3 * 2
    return buf, params_off


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_uint8_malformed_scale(bad):
    buf, off = _u8_message()
    struct.pack_into("<f", buf, off, bad)
    _recrc_v2(buf, 12)
    with pytest.raises(CodecError, match="uint8 scale must be finite and >= 0"):
        decode(buf)


def test_uint8_truncated_and_corrupt():
    buf, off = _u8_message()
    for cut in range(len(buf)):
        with pytest.raises(CodecError):
            decode(bytes(buf[:cut]))
    buf[off + 4] ^= 0x10  # the zero point: only the CRC notices
    with pytest.raises(CodecError, match="CRC mismatch"):
        decode(buf)


# ----------------------------------------------------------------------------- channel-major layout


def _slices_case(rng, n=3, b=7, c=10, spatial=(2, 3)):
    x = rng.standard_normal((n, b, *spatial)).astype(np.float32)
    idx = rng.permutation(c)[:b]
    return x, idx, (n, c, *spatial)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("slices", [None, 1, 3, [2, 4, 1]], ids=str)
def test_channel_major_round_trip(encoding, compression, slices):
    rng = np.random.default_rng(5)
    x, idx, shape = _slices_case(rng)
    cfg = CodecConfig(encoding, compression)
    sample = decode(encode(x, idx, shape, cfg, labels=np.arange(3), step=4))
    buf = encode(x, idx, shape, cfg, labels=np.arange(3), step=4, layout="channel", slices=slices)
    m = decode(buf)
    assert (m.layout, m.complete, m.step, m.version) == ("channel", True, 4, 3)
    want = {"None": (1,) * 7, "1": (7,), "3": (3, 2, 2), "[2, 4, 1]": (2, 4, 1)}[str(slices)]
    assert m.slice_channels == want and m.slices_received == len(want)
    np.testing.assert_array_equal(m.indices, idx)
    np.testing.assert_array_equal(m.values, sample.values)  # same values as the sample-major message
    np.testing.assert_array_equal(m.labels, np.arange(3))
    assert m.values.flags.c_contiguous and m.values.flags.writeable
    if compression == "none":
        assert len(buf) == encoded_size(shape, 7, cfg, with_labels=True, layout="channel", slices=slices)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("keyed", [False, True])
def test_every_truncation_decodes_the_whole_slices(encoding, compression, keyed):
    rng = np.random.default_rng(6)
    x, idx, shape = _slices_case(rng)
    key = KEY if keyed else None
    full = encode(x, idx, shape, CodecConfig(encoding, compression), layout="channel", slices=[3, 1, 2, 1], key=key)
    ref = decode(full, key=key)
    ends = slice_ends(full)
    assert len(ends) == 5 and ends[-1] == len(full)
    for cut in range(len(full) + 1):
        if cut < ends[0]:
            with pytest.raises(CodecError, match="truncated"):
                decode(full[:cut], key=key)
            continue
        m = decode(full[:cut], key=key)
        j = sum(e <= cut for e in ends[1:])  # slices that arrived whole
        b = [0, 3, 4, 6, 7][j]
        assert m.slices_received == j and len(m.indices) == b and m.complete == (j == 4)
        assert m.authenticated == keyed
        np.testing.assert_array_equal(m.indices, idx[:b])
        np.testing.assert_array_equal(m.indices_sent, idx)
        np.testing.assert_array_equal(m.missing, idx[b:])
        np.testing.assert_array_equal(m.values, ref.values[:, :b])
        d = m.dense()  # the receiver's zero padding
        np.testing.assert_array_equal(d[:, idx[:b]], ref.values[:, :b])
        assert not d[:, idx[b:]].any() and d.shape == shape
        if cut < len(full):
            with pytest.raises(CodecError, match="allow_partial=False"):
                decode(full[:cut], key=key, allow_partial=False)


def test_sample_major_truncation_stays_an_error():
    x, idx, shape = _slices_case(np.random.default_rng(7))
    buf = encode(x, idx, shape, CodecConfig())
    for cut in (len(buf) - 1, len(buf) - 4 * 6, 60):
        with pytest.raises(CodecError, match="truncated"):
            decode(buf[:cut])
    with pytest.raises(CodecError, match="sample-major"):
        slice_ends(buf)


def test_channel_major_prefix_sizes_without_data():
    """encoded_size of a k-slice message = the byte count at which k slices arrive (none)."""
    x, idx, shape = _slices_case(np.random.default_rng(8))
    cfg = CodecConfig("float16")
    for key in (None, KEY):
        ends = slice_ends(encode(x, idx, shape, cfg, layout="channel", slices=7, key=key))
        per_slice = 4 + 2 * 3 * 6 + 12 + (32 if key else 0)  # CRC, values, table entry, tag
        for k in range(1, 8):
            # an encoder that sent only k channels would have k table entries: the prefix has 7
            assert ends[k] - ends[k - 1] == per_slice - 12
        assert ends[0] == encoded_size(shape, 7, cfg, with_labels=False, layout="channel", slices=7,
                                       keyed=key is not None) - 7 * (per_slice - 12)


def test_channel_major_corruption_is_an_error_not_a_truncation():
    x, idx, shape = _slices_case(np.random.default_rng(9))
    buf = encode(x, idx, shape, CodecConfig(), layout="channel", slices=7)
    ends = slice_ends(buf)
    for pos in (5 + 7, ends[0] - 2, ends[2] + 3, len(buf) - 1):  # client id, metadata CRC, slice 3, last CRC
        bad = bytearray(buf)
        bad[pos] ^= 0x04
        with pytest.raises(CodecError, match="CRC mismatch"):
            decode(bad)
    # two slices swapped (values and CRCs): the chained CRC notices
    a, b_, c_ = ends[1], ends[2], ends[3]
    swapped = buf[:a] + buf[b_:c_] + buf[a:b_] + buf[c_:]
    with pytest.raises(CodecError, match="CRC mismatch in slice 2"):
        decode(swapped)
    with pytest.raises(CodecError, match="trailing"):
        decode(buf + b"\x00")
    with pytest.raises(CodecError, match="whole message"):
        slice_ends(buf[:-1])


def test_channel_major_with_all_channels_and_zero_channels():
    x = np.random.default_rng(10).standard_normal((2, 4, 3)).astype(np.float32)
    m = decode(encode(x, None, (2, 4, 3), CodecConfig("int8"), layout="channel", slices=2)[:-(4 + 2 * 2 * 3)])
    assert m.indices.tolist() == [0, 1] and m.missing.tolist() == [2, 3]
    assert np.abs(m.values - x[:, :2]).max() <= np.abs(x).max() / 127
    empty = encode(np.zeros((2, 0, 3), np.float32), np.zeros(0, np.int64), (2, 4, 3), CodecConfig(), layout="channel")
    e = decode(empty)
    assert e.complete and e.slice_channels == () and e.values.shape == (2, 0, 3)
    assert len(empty) == encoded_size((2, 4, 3), 0, CodecConfig(), with_labels=False, layout="channel")


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(layout="rows"), r"unknown layout 'rows'; allowed: sample, channel"),
        (dict(slices=2), r"slices 2 given with layout 'sample'"),
        (dict(layout="channel", slices=0), r"slices=0 out of range; allowed: 1..3"),
        (dict(layout="channel", slices=4), r"slices=4 out of range"),
        (dict(layout="channel", slices=[1, 1]), r"summing to B=3"),
        (dict(layout="channel", slices=[3, 0]), r"positive"),
        (dict(layout="channel", slices="ab"), r"sequence of ints"),
        (dict(key=b"short"), r"key of 5 bytes is too short for HMAC-SHA256; need at least 16"),
        (dict(key="a string key 1234"), r"key must be bytes"),
    ],
)
def test_layout_and_key_errors(kw, match):
    with pytest.raises(CodecError, match=match):
        encode(np.ones((1, 3), np.float32), np.array([2, 0, 1]), (1, 4), CodecConfig(), **kw)


def test_split_channels():
    assert codec.split_channels(10, 4) == (3, 3, 2, 2)
    assert codec.split_channels(3, None) == (1, 1, 1)
    assert codec.split_channels(0, None) == ()
    with pytest.raises(CodecError, match="no channels"):
        codec.split_channels(0, 2)


def _recrc_channel(buf: bytearray, ends) -> bytearray:
    """Recompute the metadata and chained slice CRCs (unkeyed; ``ends`` from slice_ends of the
    message before the edit) so an edit reaches the semantic checks."""
    crc = zlib.crc32(bytes(buf[: ends[0] - 4]))
    struct.pack_into("<I", buf, ends[0] - 4, crc)
    for a, e in zip(ends[:-1], ends[1:]):
        crc = zlib.crc32(bytes(buf[a : e - 4]), crc)
        struct.pack_into("<I", buf, e - 4, crc)
    return buf


def test_channel_major_bad_slice_table_with_valid_crc():
    x, idx, shape = _slices_case(np.random.default_rng(11))
    buf = bytearray(encode(x, idx, shape, CodecConfig(), layout="channel", slices=[3, 4]))
    ends = slice_ends(bytes(buf))
    table = ends[0] - 4 - 24  # two 12-byte entries before the metadata CRC
    struct.pack_into("<I", buf, table, 2)  # channels 2 + 4 != B = 7
    _recrc_channel(buf, ends)
    with pytest.raises(CodecError, match=r"slice table \[2, 4\] must be positive channel counts summing to B=7"):
        decode(buf)
    buf = bytearray(encode(x, idx, shape, CodecConfig(), layout="channel", slices=[3, 4]))
    struct.pack_into("<IQ", buf, table, 3, 3 * 3 * 6 * 4 - 4)  # stored length of slice 1 != its raw length
    with pytest.raises(CodecError):
        decode(buf)


# ----------------------------------------------------------------------------- HMAC tag


@pytest.mark.parametrize("layout", ["sample", "channel"])
@pytest.mark.parametrize("spec", ["float32", "int8+zstd", "uint8+lz4"])
def test_keyed_round_trip(layout, spec):
    x, idx, shape = _slices_case(np.random.default_rng(12))
    kw = dict(layout=layout, slices=3 if layout == "channel" else None)
    plain = encode(x, idx, shape, spec, **kw)
    buf = encode(x, idx, shape, spec, key=KEY, **kw)
    assert buf[8] & codec.FLAG_KEYED and not plain[8] & codec.FLAG_KEYED
    m = decode(buf, key=KEY)
    assert m.authenticated and m.complete
    np.testing.assert_array_equal(m.values, decode(plain).values)
    unchecked = decode(buf)  # no key: the tag is not checked, and the message says so
    assert not unchecked.authenticated
    np.testing.assert_array_equal(unchecked.values, m.values)
    if spec == "float32":
        tags = 1 if layout == "sample" else 4
        assert len(buf) - len(plain) == 32 * tags
        assert len(buf) == encoded_size(shape, 7, CodecConfig(), with_labels=False, keyed=True, **kw)


@pytest.mark.parametrize("layout", ["sample", "channel"])
def test_wrong_or_missing_tag_is_refused(layout):
    x, idx, shape = _slices_case(np.random.default_rng(13))
    kw = dict(layout=layout, slices=2 if layout == "channel" else None)
    with pytest.raises(CodecError, match="HMAC tag mismatch"):
        decode(encode(x, idx, shape, "float16", key=OTHER_KEY, **kw), key=KEY)
    with pytest.raises(CodecError, match="carries no HMAC tag but a key was given"):
        decode(encode(x, idx, shape, "float16", **kw), key=KEY)
    buf = bytearray(encode(x, idx, shape, "float16", key=KEY, **kw))
    buf[-1] ^= 0x01  # the last tag itself
    with pytest.raises(CodecError, match="HMAC tag mismatch"):
        decode(buf, key=KEY)
    with pytest.raises(CodecError, match="carries no HMAC tag"):
        decode(V2_FLOAT32, key=KEY)


def test_altered_message_with_a_valid_crc_fails_the_tag():
    """A forger can fix the CRC but not the tag."""
    x, idx, shape = _slices_case(np.random.default_rng(14))
    buf = bytearray(encode(x, idx, shape, CodecConfig(), key=KEY))
    body = 3 * 7 * 6 * 4
    tagless = buf[:-32]
    tagless[-1] ^= 0x40  # flip a bit of the last value
    _recrc_v2(tagless, body)
    forged = tagless + buf[-32:]
    assert decode(forged).values.reshape(-1)[-1] != x.reshape(-1)[-1]  # the CRC is happy
    with pytest.raises(CodecError, match="HMAC tag mismatch after the body"):
        decode(forged, key=KEY)
    # a truncated keyed sample-major message has lost its tag: refused
    with pytest.raises(CodecError, match="truncated"):
        decode(bytes(buf[:-1]), key=KEY)


def test_keyed_channel_major_later_slice_altered():
    x, idx, shape = _slices_case(np.random.default_rng(15))
    buf = bytearray(encode(x, idx, shape, CodecConfig(), layout="channel", slices=[2, 5], key=KEY))
    ends = slice_ends(bytes(buf))
    # rewrite slice 2's values and its (chained) CRC: only the tag can tell
    start = ends[1]
    buf[start] ^= 0x01
    crc_prev = struct.unpack_from("<I", buf, ends[1] - 32 - 4)[0]
    struct.pack_into("<I", buf, ends[2] - 32 - 4, zlib.crc32(bytes(buf[start : ends[2] - 36]), crc_prev))
    assert decode(bytes(buf)).complete  # no key: CRCs pass
    with pytest.raises(CodecError, match="HMAC tag mismatch after slice 2"):
        decode(bytes(buf), key=KEY)
    m = decode(bytes(buf[: ends[2] - 1]), key=KEY)  # slice 2 cut off: slice 1 is authentic
    assert m.authenticated and m.indices.tolist() == idx[:2].tolist()


def test_fuzz_v3_mutations_only_raise_codec_error():
    rng = np.random.default_rng(16)
    x, idx, shape = _slices_case(rng)
    seeds = [
        encode(x, idx, shape, spec, layout=lay, slices=3 if lay == "channel" else None, key=key, labels=np.arange(3))
        for spec in ("float32", "uint8", "int8+zstd", "float16+lz4")
        for lay in ("sample", "channel")
        for key in (None, KEY)
    ]
    for _ in range(3000):
        buf = bytearray(seeds[rng.integers(len(seeds))])
        for _ in range(rng.integers(1, 4)):
            buf[rng.integers(len(buf))] = rng.integers(256)
        if rng.random() < 0.3:
            buf = buf[: rng.integers(len(buf))]
        for key in (None, KEY):
            try:
                m = decode(bytes(buf), key=key)
            except CodecError:
                continue
            assert m.values.dtype == np.float32
            assert m.values.shape == (m.shape[0], len(m.indices), *m.shape[2:])


def test_training_with_uint8_on_the_wire(tmp_path):
    """``--codec uint8`` trains (local reference trainer) and every message is the exact size."""
    import pyarrow.parquet as pq

    from raysplit import local

    out = tmp_path / "u8"
    assert local.main(["--dataset", "digits", "--image-size", "16", "--batch-size", "32", "--max-batches", "4",
                       "--test-subset", "64", "--threads", "1", "--no-progress", "--method", "fixed", "--budgets",
                       "4", "--epochs-per-budget", "1", "--codec", "uint8", "--out", str(out)]) == 0
    st = pq.read_table(out / "steps.parquet").to_pandas()
    cfg = CodecConfig("uint8")
    assert len(st) == 4 and np.isfinite(st["loss"]).all()
    for _, r in st.iterrows():  # digits at 16 px: 128 x 4 x 4 at the split
        n = int(r["samples"])
        assert r["bytes_up"] == encoded_size((n, 128, 4, 4), 4, cfg, with_labels=True, keyed=True)  # tenant-keyed
        assert r["bytes_down"] == encoded_size((n, 128, 4, 4), 4, cfg, with_labels=False, keyed=True)
