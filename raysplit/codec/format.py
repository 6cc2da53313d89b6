"""The byte layout of a message: header structs, flags, kinds, versions and exact sizes.

Format version 2 (all integers little-endian; no padding anywhere)
-----------------------------------------------------------------

==========  ==========================  =====================================================
offset      size (bytes)                field
==========  ==========================  =====================================================
0           4                           magic ``b"RSPL"``
4           1                           format version (uint8) = 2
5           1                           kind (uint8): 1 activation, 2 gradient
6           1                           encoding id (uint8): 0 float32, 1 float16, 2 int8
7           1                           compression id (uint8): 0 none, 1 lz4 (frame), 2 zstd
8           1                           flags (uint8): bit0 has_labels, bit1 all_channels,
                                        bit2 allow_nonfinite, bit3 wide_indices (uint32
                                        indices; set iff C > 65535); bits 4-7 must be 0
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
..          4*B if int8 else 0          per-channel scales (float32, finite, >= 0)
..          4*N if has_labels else 0    labels (int32)
..          8                           raw payload length (uint64) = N*B*prod(spatial)*width
..          8                           stored body length (uint64) (== raw when "none")
..          4                           CRC32 (``zlib.crc32``) of every byte of the message
                                        except these four, i.e. header, metadata and body
..          stored length               body: values of shape (N, B, *spatial), C order, as
                                        float32 / float16 / int8 (width 4 / 2 / 1), optionally
                                        compressed with pyarrow's lz4-frame or zstd codec
==========  ==========================  =====================================================

Version 1 is version 2 without the tenant word (a 28-byte fixed header) and with bytes
10-11 reserved (must be 0). Decoders read both; a v1 message has tenant 0 and cut 0.
Encoders write version 2 only.

The message ends exactly at the end of the body; trailing bytes are an error.

Overhead: 32 + 4*ndim + index bytes + scale bytes + label bytes + 20. For N=16, B=4, 8x8
float32 with labels that is 140 bytes on a 16,384-byte payload (0.85 %).
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
    "HEADER_SIZE",
    "Header",
    "payload_nbytes",
]


class CodecError(ValueError):
    """A buffer could not be decoded (or a message could not be encoded)."""


MAGIC = b"RSPL"
FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
MAX_NDIM = 32

KIND_ACTIVATION = 1
KIND_GRADIENT = 2
KINDS = {KIND_ACTIVATION: "activation", KIND_GRADIENT: "gradient"}

FLAG_HAS_LABELS = 1 << 0
FLAG_ALL_CHANNELS = 1 << 1
FLAG_ALLOW_NONFINITE = 1 << 2
FLAG_WIDE_INDICES = 1 << 3
KNOWN_FLAGS = FLAG_HAS_LABELS | FLAG_ALL_CHANNELS | FLAG_ALLOW_NONFINITE | FLAG_WIDE_INDICES

U16_MAX = 0xFFFF
U32_MAX = 0xFFFFFFFF
U64_MAX = 0xFFFFFFFFFFFFFFFF

# magic, version, kind, enc, comp, flags, ndim, cut (v1: reserved), client_id, step, B
_COMMON = "<4sBBBBBBHIQI"
HEADERS = {1: struct.Struct(_COMMON), 2: struct.Struct(_COMMON + "I")}  # v2 appends tenant
HEADER_SIZE = HEADERS[FORMAT_VERSION].size  # 32
MIN_HEADER_SIZE = min(h.size for h in HEADERS.values())  # 28 (v1)
LENGTHS = struct.Struct("<QQ")  # raw payload length, stored body length
CRC = struct.Struct("<I")
TRAILER_SIZE = LENGTHS.size + CRC.size  # 20


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


def meta_nbytes(ndim: int, n: int, b: int, c: int, scale_bytes_per_channel: int,
                has_labels: bool, all_channels: bool) -> int:
    """Every byte that is not the body, for the current version."""
    size = HEADER_SIZE + 4 * ndim + TRAILER_SIZE
    if not all_channels:
        size += b * (4 if c > U16_MAX else 2)
    size += scale_bytes_per_channel * b
    if has_labels:
        size += 4 * n
    return size
