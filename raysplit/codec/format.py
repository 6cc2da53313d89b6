"""The byte layout of a message: header structs, flags, kinds, versions and exact sizes.

Format version 3 (all integers little-endian; no padding anywhere)
-----------------------------------------------------------------

==========  ==========================  =====================================================
offset      size (bytes)                field
==========  ==========================  =====================================================
0           4                           magic ``b"RSPL"``
4           1                           format version (uint8) = 3
5           1                           kind (uint8): 1 activation, 2 gradient
6           1                           encoding id (uint8): 0 float32, 1 float16, 2 int8,
                                        3 uint8 (v3 only)
7           1                           compression id (uint8): 0 none, 1 lz4 (frame), 2 zstd
8           1                           flags (uint8): bit0 has_labels, bit1 all_channels,
                                        bit2 allow_nonfinite, bit3 wide_indices (uint32
                                        indices; set iff C > 65535), bit4 channel_major,
                                        bit5 keyed (HMAC-SHA256 tags follow, see below);
                                        bits 6-7 must be 0
9           1                           ndim (uint8), 2 <= ndim <= 32
10          2                           cut (uint16): which split point of the model the
                                        tensor belongs to (0 = the first cut)
12          4                           client_id (uint32)
16          8                           step (uint64), matches a gradient to its activation
24          4                           B = number of channels sent (uint32), 0 <= B <= C
28          4                           tenant (uint32): the run's tenant key
32          4*ndim                      shape dims (uint32 each): N, C, *spatial, all >= 1
..          0 | 2*B | 4*B               channel indices, uint16 (uint32 if wide_indices), in
                                        the order sent; absent when all_channels (then B == C
                                        and the indices are 0..C-1)
..          4*B if int8                 int8: per-channel scales (float32, finite, >= 0)
..          5 if uint8                  uint8: scale (float32, finite, >= 0), zero point (uint8)
..          4*N if has_labels else 0    labels (int32)
..          8                           raw payload length (uint64) = N*B*prod(spatial)*width
..          8                           stored body length (uint64) (== raw when "none")
==========  ==========================  =====================================================

Then, **sample-major** (bit4 clear; the layout of versions 1 and 2):

==========  ==========================  =====================================================
..          4                           CRC32 (``zlib.crc32``) of every byte of the message
                                        except these four and the tag
..          stored length               body: values of shape (N, B, *spatial), C order,
                                        optionally compressed with pyarrow's lz4-frame or zstd
..          32 if keyed                 HMAC-SHA256 tag of every byte before it
==========  ==========================  =====================================================

or **channel-major** (bit4 set): the B sent channels are cut into J slices (in the order
sent) and each slice is checked on its own, so a message cut short still yields every
slice that arrived whole:

==========  ==========================  =====================================================
..          4                           J = number of slices (uint32); 0 iff B == 0
..          12*J                        per slice: channels (uint32, >= 1, summing to B),
                                        stored length (uint64, summing to the stored length)
..          4                           metadata CRC32: of every byte above
..          32 if keyed                 tag: HMAC-SHA256 of every byte above
then J times:
..          stored length of slice j    its values, shape (channels_j, N, *spatial), C order,
                                        compressed on their own when lz4/zstd
..          4                           CRC32 of the slice's bytes, seeded with the previous
                                        CRC (the metadata CRC for slice 1), so slices cannot
                                        be swapped unnoticed
..          32 if keyed                 tag: HMAC-SHA256 of every byte of the message before it
==========  ==========================  =====================================================

A buffer that ends inside slice j decodes to slices 1..j-1 (``Message.complete`` is False,
``Message.indices`` are the channels that arrived, ``Message.indices_sent`` all B); a
buffer that ends inside the metadata, or a sample-major buffer that is short at all, is an
error. With a key every returned slice is covered by a tag the receiver checked (each
tag authenticates the whole prefix before it), so truncation never lets unauthenticated
bytes through.

Value encodings: int8 is symmetric per sent channel, uint8 affine per message (one scale
and one zero point for the whole tensor; see ``encodings``). Version 1 is version 2
without the tenant word (a 28-byte fixed header) and with bytes 10-11 reserved (must be 0);
version 2 is version 3 restricted to the sample-major layout, no tag, no uint8 (flag bits
4-7 must be 0). Decoders read all three (v1: tenant 0, cut 0); encoders write version 3.

The message ends exactly where its layout says; trailing bytes are an error.

Overhead, sample-major: 32 + 4*ndim + index bytes + scale bytes + label bytes + 20 (+32
keyed). For N=16, B=4, 8x8 float32 with labels that is 140 bytes on a 16,384-byte payload
(0.85 %). Channel-major adds 4 + 16*J (+32*(J+1) keyed).
"""

from __future__ import annotations

import math
import struct

__all__ = [
    "CodecError",
    "MAGIC",
    "FORMAT_VERSION",
    "SUPPORTED_VERSIONS",
    "KIND_ACTIVATION",
    "KIND_GRADIENT",
    "KINDS",
    "LAYOUTS",
    "HEADER_SIZE",
    "TAG_SIZE",
    "MIN_KEY_BYTES",
    "Header",
    "payload_nbytes",
]


class CodecError(ValueError):
    """A buffer could not be decoded (or a message could not be encoded)."""


MAGIC = b"RSPL"
FORMAT_VERSION = 3
SUPPORTED_VERSIONS = (1, 2, 3)
MAX_NDIM = 32

KIND_ACTIVATION = 1
KIND_GRADIENT = 2
KINDS = {KIND_ACTIVATION: "activation", KIND_GRADIENT: "gradient"}

LAYOUTS = ("sample", "channel")  # sample-major body (N, B, ...) / channel-major slices

FLAG_HAS_LABELS = 1 << 0
FLAG_ALL_CHANNELS = 1 << 1
FLAG_ALLOW_NONFINITE = 1 << 2
FLAG_WIDE_INDICES = 1 << 3
FLAG_CHANNEL_MAJOR = 1 << 4
FLAG_KEYED = 1 << 5
_V2_FLAGS = FLAG_HAS_LABELS | FLAG_ALL_CHANNELS | FLAG_ALLOW_NONFINITE | FLAG_WIDE_INDICES
KNOWN_FLAGS_BY_VERSION = {1: _V2_FLAGS, 2: _V2_FLAGS, 3: _V2_FLAGS | FLAG_CHANNEL_MAJOR | FLAG_KEYED}
KNOWN_FLAGS = KNOWN_FLAGS_BY_VERSION[3]

U16_MAX = 0xFFFF
U32_MAX = 0xFFFFFFFF
U64_MAX = 0xFFFFFFFFFFFFFFFF

# magic, version, kind, enc, comp, flags, ndim, cut (v1: reserved), client_id, step, B
_COMMON = "<4sBBBBBBHIQI"
_V2 = struct.Struct(_COMMON + "I")  # v2 appends tenant; v3 keeps v2's fixed header
HEADERS = {1: struct.Struct(_COMMON), 2: _V2, 3: _V2}
HEADER_SIZE = HEADERS[FORMAT_VERSION].size  # 32
MIN_HEADER_SIZE = min(h.size for h in HEADERS.values())  # 28 (v1)
LENGTHS = struct.Struct("<QQ")  # raw payload length, stored body length
CRC = struct.Struct("<I")
TRAILER_SIZE = LENGTHS.size + CRC.size  # 20
SLICE_COUNT = struct.Struct("<I")  # J, channel-major only
SLICE_ENTRY = struct.Struct("<IQ")  # channels, stored length of one slice
TAG_SIZE = 32  # HMAC-SHA256
MIN_KEY_BYTES = 16


class Header(tuple):
    """The fixed header fields, whatever the version (v1 reads as tenant 0, cut 0)."""

    __slots__ = ()
    _fields = ("version", "kind", "enc_id", "comp_id", "flags", "ndim", "cut", "client_id", "step", "b", "tenant")

    version = property(lambda s: s[0])
    kind = property(lambda s: s[1])
    enc_id = property(lambda s: s[2])
    comp_id = property(lambda s: s[3])
    flags = property(lambda s: s[4])
    ndim = property(lambda s: s[5])
    cut = property(lambda s: s[6])
    client_id = property(lambda s: s[7])
    step = property(lambda s: s[8])
    b = property(lambda s: s[9])
    tenant = property(lambda s: s[10])


def pack_header(kind: int, enc_id: int, comp_id: int, flags: int, ndim: int, cut: int,
                client_id: int, step: int, b: int, tenant: int) -> bytes:
    """The current version's fixed header."""
    return HEADERS[FORMAT_VERSION].pack(
        MAGIC, FORMAT_VERSION, kind, enc_id, comp_id, flags, ndim, cut, client_id, step, b, tenant
    )


def unpack_header(mv: memoryview) -> tuple[Header, int]:
    """(header, its size). Checks magic, version and length; the caller checks the rest."""
    total = len(mv)
    if total >= 4 and bytes(mv[:4]) != MAGIC:
        raise CodecError(f"bad magic {bytes(mv[:4])!r}; expected {MAGIC!r}")
    if total < 5:
        raise CodecError(f"truncated message: {total} bytes, the fixed header alone needs {MIN_HEADER_SIZE}")
    version = mv[4]
    if version not in SUPPORTED_VERSIONS:
        raise CodecError(
            f"unsupported format version {version}; supported: {', '.join(map(str, SUPPORTED_VERSIONS))}"
        )
    st = HEADERS[version]
    if total < st.size:
        raise CodecError(f"truncated message: {total} bytes, the v{version} fixed header alone needs {st.size}")
    fields = st.unpack_from(mv, 0)[1:]
    if version == 1:
        if fields[6] != 0:
            raise CodecError(f"reserved header field is {fields[6]}; must be 0 in format version 1")
        fields = fields + (0,)
    return Header(fields), st.size


def payload_nbytes(n: int, n_selected: int, spatial: tuple[int, ...], width: int) -> int:
    """``n * n_selected * prod(spatial) * width``: the values alone."""
    return int(n) * int(n_selected) * math.prod(int(s) for s in spatial) * int(width)


def meta_nbytes(ndim: int, n: int, b: int, c: int, param_bytes: int,
                has_labels: bool, all_channels: bool) -> int:
    """Every byte before the lengths field, plus the 20 of lengths and the (metadata) CRC."""
    size = HEADER_SIZE + 4 * ndim + TRAILER_SIZE
    if not all_channels:
        size += b * (4 if c > U16_MAX else 2)
    size += param_bytes
    if has_labels:
        size += 4 * n
    return size


def layout_nbytes(layout: str, n_slices: int, keyed: bool) -> int:
    """What the layout adds to :func:`meta_nbytes` and the payload: slice table and CRCs
    (channel-major) and the tags (keyed)."""
    if layout == "sample":
        return TAG_SIZE if keyed else 0
    return SLICE_COUNT.size + n_slices * (SLICE_ENTRY.size + CRC.size) + (TAG_SIZE * (n_slices + 1) if keyed else 0)


def split_channels(b: int, slices) -> tuple[int, ...]:
    """Channels per slice for a channel-major message of B channels.

    ``slices``: None (one slice per channel), an int J (J slices as equal as possible, the
    first ``B % J`` one channel larger, so the most important slices are never the
    smaller), or a sequence of positive channel counts summing to B.
    """
    if b == 0:
        if slices is None or (not isinstance(slices, int) and len(tuple(slices)) == 0):
            return ()
        raise CodecError(f"slices {slices!r} given for a message with no channels; a B=0 message has none")
    if slices is None:
        return (1,) * b
    if isinstance(slices, bool):
        raise CodecError(f"slices must be None, an int or a sequence of ints, got {slices!r}")
    if isinstance(slices, int):
        if not 1 <= slices <= b:
            raise CodecError(f"slices={slices} out of range; allowed: 1..{b} (B, the channels sent)")
        q, r = divmod(b, slices)
        return tuple(q + 1 if j < r else q for j in range(slices))
    try:
        counts = tuple(int(s) for s in slices)
    except (TypeError, ValueError):
        raise CodecError(f"slices must be None, an int or a sequence of ints, got {slices!r}") from None
    if not counts or any(s < 1 for s in counts) or sum(counts) != b:
        raise CodecError(f"slices {list(counts)} must be positive channel counts summing to B={b}")
    if any(s > U32_MAX for s in counts):
        raise CodecError(f"a slice of more than {U32_MAX} channels")
    return counts
