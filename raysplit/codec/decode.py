"""decode(): one buffer -> a :class:`Message`, or a :class:`CodecError` naming the fault.

``decode`` raises :class:`CodecError` (a ``ValueError``) for every malformed buffer:
truncation (except a channel-major message cut after its metadata, which decodes to the
slices that arrived whole), bad magic, unsupported version, unknown
kind/encoding/compression/flag bits, bad dims, indices out of range or repeated, length
mismatches, CRC mismatch, a missing or wrong HMAC tag when a key is given, decompression
failure, NaN/Inf the header did not allow, trailing bytes. The CRC guards against
corruption, the tag (with a key) against forgery; either way no length in a header can
make decode read out of bounds, and a compressed body may not claim more than 1024x (lz4)
or 65536x (zstd) its stored size. (pyarrow's LZ4 frame decoder does not report a body that
decompresses to fewer bytes than claimed; the CRC catches that unless it is forged.)
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from raysplit.codec import encodings
from raysplit.codec.config import COMPRESSIONS, pa_codec
from raysplit.codec.encode import check_key
from raysplit.codec.format import (
    CRC,
    FLAG_ALL_CHANNELS,
    FLAG_ALLOW_NONFINITE,
    FLAG_CHANNEL_MAJOR,
    FLAG_HAS_LABELS,
    FLAG_KEYED,
    FLAG_WIDE_INDICES,
    KINDS,
    KNOWN_FLAGS_BY_VERSION,
    LENGTHS,
    MAX_NDIM,
    SLICE_COUNT,
    SLICE_ENTRY,
    TAG_SIZE,
    TRAILER_SIZE,
    U16_MAX,
    CodecError,
    payload_nbytes,
    unpack_header,
)

__all__ = ["Message", "decode", "slice_ends"]

# Bounds on raw/stored for a well-formed body (format limits are ~255:1 for LZ4 and
# ~32768:1 for zstd, measured on all-zero data), with a margin: a forged header must not
# make decode allocate far more than the message could ever hold.
_MAX_RATIO = {"lz4": 1024, "zstd": 65536}


@dataclass(frozen=True, eq=False)
class Message:
    """A decoded message. Arrays are owned (writeable) copies, never views of the buffer.

    Attributes:
        kind: KIND_ACTIVATION or KIND_GRADIENT.
        shape: full shape (N, C, *spatial); the channel axis is 1.
        indices: int64 (B',), the channel indices that arrived, in the order sent (all B
            unless a channel-major message was cut short).
        values: float32 (N, B', *spatial), dequantised.
        labels: int64 (N,) or None.
        step: sequence number (uint64).
        client_id: uint32 sender id.
        tenant: uint32 tenant key (0 for format version 1).
        cut: uint16 split point (0 for format version 1).
        version: the format version the sender wrote.
        indices_sent: int64 (B,), every channel the sender put in the message (None: the
            same as ``indices``).
        slice_channels: channels per slice as sent ((B,) for a sample-major message).
        slices_received: how many of those slices arrived whole.
        layout: "sample" or "channel".
        authenticated: True when a key was given and every returned byte is covered by a
            tag that matched it.
    """

    kind: int
    shape: tuple[int, ...]
    indices: np.ndarray
    values: np.ndarray
    labels: np.ndarray | None
    step: int
    client_id: int
    tenant: int = 0
    cut: int = 0
    version: int = 3
    indices_sent: np.ndarray | None = None
    slice_channels: tuple[int, ...] = ()
    slices_received: int = 0
    layout: str = "sample"
    authenticated: bool = False

    @property
    def complete(self) -> bool:
        """Whether every channel the sender put in the message arrived."""
        return self.indices_sent is None or len(self.indices) == len(self.indices_sent)

    @property
    def missing(self) -> np.ndarray:
        """int64: the channels that were sent but did not arrive (in the order sent)."""
        if self.indices_sent is None:
            return np.zeros(0, np.int64)
        return self.indices_sent[len(self.indices):]

    def dense(self) -> np.ndarray:
        """(N, C, *spatial) float32: values scattered at their channel indices, zeros elsewhere
        (every channel not sent, or sent but not arrived)."""
        out = np.zeros(self.shape, dtype=np.float32)
        out[:, self.indices] = self.values
        return out


def _as_bytes_view(buf) -> memoryview:
    if isinstance(buf, np.ndarray):
        if not buf.flags.c_contiguous:
            raise CodecError("buffer array must be C-contiguous")
        try:
            return memoryview(buf).cast("B")
        except (TypeError, ValueError) as e:
            raise CodecError(f"cannot read the buffer array as bytes: {e}") from None
    if isinstance(buf, (bytes, bytearray)):
        return memoryview(buf)
    if isinstance(buf, memoryview):
        if buf.format == "B" and buf.ndim == 1 and buf.contiguous:
            return buf
        if not buf.c_contiguous:
            raise CodecError("memoryview buffer must be C-contiguous")
        try:
            return buf.cast("B")
        except (TypeError, ValueError) as e:
            raise CodecError(f"cannot read the memoryview as bytes: {e}") from None
    raise CodecError(
        f"cannot decode a {type(buf).__name__}; allowed: bytes, bytearray, memoryview, numpy array"
    )


def decode(buf: bytes | bytearray | memoryview | np.ndarray, *, key: bytes | None = None,
           allow_partial: bool = True) -> Message:
    """Decode one buffer made by :func:`encode`. Raises CodecError for anything malformed.

    Args:
        buf: the message (or, channel-major, a prefix of it).
        key: the HMAC key the sender used: a message without a tag, or with a wrong one, is
            refused. None: tags are not checked (``Message.authenticated`` is False).
        allow_partial: False: a channel-major message cut short is an error too.
    """
    key = check_key(key)
    try:
        return _decode(_as_bytes_view(buf), key, allow_partial)
    except CodecError:
        raise
    except Exception as e:  # defensive: nothing but CodecError may leave decode
        raise CodecError(f"malformed message: {type(e).__name__}: {e}") from e


def slice_ends(buf: bytes | bytearray | memoryview | np.ndarray) -> tuple[int, ...]:
    """Byte counts at which a channel-major message's units are complete: element 0 is the
    metadata, element j the first j slices (the last is ``len(buf)``). A link that delivers
    ``ends[j]`` bytes delivers j slices. The buffer must be a whole message."""
    mv = _as_bytes_view(buf)
    try:
        layout = _read_layout(mv, None)
    except CodecError:
        raise
    except Exception as e:  # defensive, as in decode
        raise CodecError(f"malformed message: {type(e).__name__}: {e}") from e
    if layout.slices is None:
        raise CodecError("slice_ends needs a channel-major message (layout 'channel'); this one is sample-major")
    if layout.total != len(mv):
        raise CodecError(f"slice_ends needs the whole message: {len(mv)} bytes given, it has {layout.total}")
    return tuple(layout.unit_ends)


@dataclass(frozen=True)
class _Layout:
    """Where everything is, read from (and checked against) the metadata."""

    h: object
    enc: encodings.Encoding
    comp: str
    shape: tuple[int, ...]
    idx_off: int
    params_off: int
    labels_off: int
    raw_len: int
    stored_len: int
    keyed: bool
    slices: list[tuple[int, int]] | None  # (channels, stored length) per slice; None: sample-major
    meta_end: int  # sample-major: where the body starts; channel-major: end of metadata (+tag)
    meta_crc: int  # channel-major: the metadata CRC, which seeds the first slice's
    unit_ends: list[int]  # channel-major: end of metadata unit, then of each slice unit
    total: int  # the whole message's length


def _read_layout(mv: memoryview, key: bytes | None) -> _Layout:
    """Header, dims and the layout's tables; checks CRC (and tag) of the metadata."""
    total = len(mv)
    h, off = unpack_header(mv)
    b, ndim, flags, version = h.b, h.ndim, h.flags, h.version
    if h.kind not in KINDS:
        raise CodecError(
            f"unknown message kind {h.kind}; allowed: "
            + ", ".join(f"{k} ({v})" for k, v in sorted(KINDS.items()))
        )
    enc = encodings.by_id(h.enc_id, version)
    if h.comp_id >= len(COMPRESSIONS):
        allowed = ", ".join(f"{i} ({n})" for i, n in enumerate(COMPRESSIONS))
        raise CodecError(f"unknown compression id {h.comp_id}; allowed: {allowed}")
    comp = COMPRESSIONS[h.comp_id]
    known = KNOWN_FLAGS_BY_VERSION[version]
    if flags & ~known:
        raise CodecError(
            f"unknown flag bits 0x{flags & ~known:02x} in flags 0x{flags:02x}; known in format version "
            f"{version}: 0x{known:02x}"
        )
    if not 2 <= ndim <= MAX_NDIM:
        raise CodecError(f"ndim {ndim} not allowed; allowed: 2..{MAX_NDIM}")
    keyed = bool(flags & FLAG_KEYED)
    if key is not None and not keyed:
        raise CodecError("message carries no HMAC tag but a key was given; refusing an unauthenticated message")

    if total < off + 4 * ndim:
        raise CodecError(f"truncated message: {total} bytes, header with {ndim} dims needs {off + 4 * ndim}")
    shape = struct.unpack_from(f"<{ndim}I", mv, off)
    off += 4 * ndim
    if min(shape) < 1:
        raise CodecError(f"shape {shape} has a zero dim; all dims must be >= 1")
    n = shape[0]
    idx_width = 0 if flags & FLAG_ALL_CHANNELS else (4 if flags & FLAG_WIDE_INDICES else 2)
    idx_off = off
    params_off = idx_off + b * idx_width
    labels_off = params_off + enc.param_nbytes(b)
    lengths_off = labels_off + (4 * n if flags & FLAG_HAS_LABELS else 0)
    if total < lengths_off + LENGTHS.size:
        raise CodecError(
            f"truncated message: {total} bytes, header and metadata need {lengths_off + TRAILER_SIZE}"
        )
    raw_len, stored_len = LENGTHS.unpack_from(mv, lengths_off)
    tag = TAG_SIZE if keyed else 0

    if not flags & FLAG_CHANNEL_MAJOR:
        body_off = lengths_off + TRAILER_SIZE
        if total < body_off:
            raise CodecError(f"truncated message: {total} bytes, header and metadata need {body_off}")
        return _Layout(h, enc, comp, shape, idx_off, params_off, labels_off, raw_len, stored_len, keyed, None,
                       body_off, 0, [], body_off + stored_len + tag)

    count_off = lengths_off + LENGTHS.size
    if total < count_off + SLICE_COUNT.size:
        raise CodecError(f"truncated message: {total} bytes, the metadata needs {count_off + SLICE_COUNT.size}+")
    (j,) = SLICE_COUNT.unpack_from(mv, count_off)
    table_end = count_off + SLICE_COUNT.size + j * SLICE_ENTRY.size
    meta_end = table_end + CRC.size + tag
    if total < meta_end:
        raise CodecError(f"truncated message: {total} bytes, header and metadata (with {j} slices) need {meta_end}")
    (crc_sent,) = CRC.unpack_from(mv, table_end)
    crc = zlib.crc32(mv[:table_end])
    if crc != crc_sent:
        raise CodecError(
            f"CRC mismatch in the metadata: header says 0x{crc_sent:08x}, contents give 0x{crc:08x}; message corrupted"
        )
    if key is not None:
        _check_tag(mv, key, table_end + CRC.size, "the metadata")
    slices = [SLICE_ENTRY.unpack_from(mv, count_off + SLICE_COUNT.size + k * SLICE_ENTRY.size) for k in range(j)]
    ends, end = [meta_end], meta_end
    for _, stored in slices:
        end += stored + CRC.size + tag
        ends.append(end)
    return _Layout(h, enc, comp, shape, idx_off, params_off, labels_off, raw_len, stored_len, keyed, slices,
                   meta_end, crc, ends, end)


def _check_tag(mv: memoryview, key: bytes, at: int, what: str) -> None:
    """The tag at ``at`` must be the HMAC of every byte before it."""
    want = hmac.new(key, mv[:at], hashlib.sha256).digest()
    if not hmac.compare_digest(want, bytes(mv[at : at + TAG_SIZE])):
        raise CodecError(f"HMAC tag mismatch after {what}: the message was not made with this key, or was altered")


def _decode(mv: memoryview, key: bytes | None, allow_partial: bool) -> Message:
    total = len(mv)
    lay = _read_layout(mv, key)
    h, enc, comp, shape = lay.h, lay.enc, lay.comp, lay.shape
    b, flags = h.b, h.flags
    channel_major = lay.slices is not None
    if total < lay.total and not (channel_major and allow_partial):
        if channel_major:
            raise CodecError(
                f"truncated message: {total} bytes of {lay.total} (channel-major; allow_partial=False)"
            )
        raise CodecError(
            f"truncated message: {total} bytes, header says {lay.total} "
            f"(body of {lay.stored_len} bytes at offset {lay.meta_end})"
        )
    if total > lay.total:
        raise CodecError(f"{total - lay.total} trailing bytes after the body; message is {lay.total} bytes")
    if not channel_major:
        crc_off = lay.meta_end - CRC.size
        (crc_sent,) = CRC.unpack_from(mv, crc_off)
        body_end = lay.meta_end + lay.stored_len
        crc = zlib.crc32(mv[lay.meta_end : body_end], zlib.crc32(mv[:crc_off]))
        if crc != crc_sent:
            raise CodecError(
                f"CRC mismatch: header says 0x{crc_sent:08x}, contents give 0x{crc:08x}; message corrupted"
            )
        if key is not None:
            _check_tag(mv, key, body_end, "the body")

    # ---- semantic checks (the bytes are what the sender wrote)
    n, c = shape[0], shape[1]
    all_channels = bool(flags & FLAG_ALL_CHANNELS)
    wide = bool(flags & FLAG_WIDE_INDICES)
    if b > c:
        raise CodecError(f"B={b} channels sent but C={c}; allowed: 0..{c}")
    if all_channels and b != c:
        raise CodecError(f"all_channels flag set but B={b} != C={c}")
    if wide != (c > U16_MAX):
        raise CodecError(
            f"wide_indices flag is {int(wide)} but C={c} needs {int(c > U16_MAX)} (uint32 indices iff C > {U16_MAX})"
        )
    spatial = shape[2:]
    per_channel = payload_nbytes(n, 1, spatial, enc.width)
    expect_raw = per_channel * b
    if lay.raw_len != expect_raw:
        raise CodecError(
            f"raw payload length {lay.raw_len} does not match shape {shape} with B={b} {enc.name}: {expect_raw}"
        )
    if comp == "none" and lay.stored_len != lay.raw_len:
        raise CodecError(f"stored length {lay.stored_len} != raw length {lay.raw_len} with compression 'none'")
    if channel_major:
        counts = [k for k, _ in lay.slices]
        if (b == 0) != (not counts) or any(k < 1 for k in counts) or sum(counts) != b:
            raise CodecError(f"slice table {counts} must be positive channel counts summing to B={b}")
        if sum(s for _, s in lay.slices) != lay.stored_len:
            raise CodecError(
                f"slice table stores {sum(s for _, s in lay.slices)} bytes; the lengths field says {lay.stored_len}"
            )
        for k, (ch, stored) in enumerate(lay.slices):
            _check_stored(comp, ch * per_channel, stored, f"slice {k + 1}")
    else:
        _check_stored(comp, lay.raw_len, lay.stored_len, "body")

    if all_channels:
        indices = np.arange(c, dtype=np.int64)
    else:
        idx = np.frombuffer(mv, dtype="<u4" if wide else "<u2", count=b, offset=lay.idx_off)
        if b:
            hi = int(idx.max())
            if hi >= c:
                raise CodecError(f"channel index {hi} out of range; allowed: 0..{c - 1}")
            if b > 1:
                s = np.sort(idx)
                dup = s[1:] == s[:-1]
                if dup.any():
                    raise CodecError(f"channel index {int(s[1:][dup][0])} repeated; indices must be unique")
        indices = idx.astype(np.int64)
    params = enc.read_params(mv[lay.params_off : lay.labels_off], b)
    labels = None
    if flags & FLAG_HAS_LABELS:
        labels = np.frombuffer(mv, dtype="<i4", count=n, offset=lay.labels_off).astype(np.int64)

    if channel_major:
        pieces, crc, off = [], lay.meta_crc, lay.meta_end
        for k, ((ch, stored), end) in enumerate(zip(lay.slices, lay.unit_ends[1:])):
            if end > total:
                break  # this slice (and every later one) did not arrive whole
            crc = zlib.crc32(mv[off : off + stored], crc)
            (crc_sent,) = CRC.unpack_from(mv, off + stored)
            if crc != crc_sent:
                raise CodecError(
                    f"CRC mismatch in slice {k + 1} of {len(lay.slices)}: header says 0x{crc_sent:08x}, "
                    f"contents give 0x{crc:08x}; message corrupted"
                )
            if key is not None:
                _check_tag(mv, key, off + stored + CRC.size, f"slice {k + 1}")
            pieces.append(_unstore(comp, mv[off : off + stored], ch * per_channel, f"slice {k + 1}"))
            off = end
        received = len(pieces)
        b_recv = sum(counts[:received])
        body = pieces[0] if received == 1 else b"".join(pieces)
        values = enc.decode(body, params, (b_recv, n, *spatial), b_recv * per_channel, 0)
        values = np.ascontiguousarray(np.moveaxis(values, 0, 1))
        slice_channels = tuple(counts)
    else:
        body = _unstore(comp, mv[lay.meta_end : lay.meta_end + lay.stored_len], lay.raw_len, "body")
        values = enc.decode(body, params, (n, b, *spatial), lay.raw_len, 1)
        received, b_recv, slice_channels = 1, b, (b,)

    if enc.carries_nonfinite and not flags & FLAG_ALLOW_NONFINITE and values.size and not (
        np.isfinite(values.min()) and np.isfinite(values.max())
    ):
        raise CodecError(
            f"payload contains {int((~np.isfinite(values)).sum())} NaN/Inf values but the header "
            f"does not allow non-finite values"
        )
    return Message(
        kind=h.kind,
        shape=tuple(int(d) for d in shape),
        indices=indices[:b_recv] if b_recv < b else indices,
        values=values,
        labels=labels,
        step=int(h.step),
        client_id=int(h.client_id),
        tenant=int(h.tenant),
        cut=int(h.cut),
        version=int(h.version),
        indices_sent=indices,
        slice_channels=slice_channels,
        slices_received=received,
        layout="channel" if channel_major else "sample",
        authenticated=key is not None,
    )


def _check_stored(comp: str, raw: int, stored: int, what: str) -> None:
    if comp == "none":
        if stored != raw:
            raise CodecError(f"{what}: stored length {stored} != raw length {raw} with compression 'none'")
        return
    if raw == 0 and stored != 0:
        raise CodecError(f"{what}: empty payload but {stored} stored bytes")
    if raw > stored * _MAX_RATIO[comp] + 4096:
        raise CodecError(
            f"header claims {raw} raw bytes from {stored} {comp} bytes ({what}), beyond {comp}'s "
            f"maximum ratio ({_MAX_RATIO[comp]}:1 with margin); message corrupted or forged"
        )


def _unstore(comp: str, stored: memoryview, raw_len: int, what: str):
    """The raw bytes of a stored body or slice."""
    if comp == "none" or raw_len == 0:
        return stored
    try:
        body = pa_codec(comp, None).decompress(stored, decompressed_size=raw_len)
    except Exception as e:
        raise CodecError(f"{comp} decompression failed ({len(stored)} -> {raw_len} bytes, {what}): {e}") from None
    if body.size != raw_len:
        raise CodecError(f"{comp} decompressed to {body.size} bytes; header says {raw_len} ({what})")
    return body
