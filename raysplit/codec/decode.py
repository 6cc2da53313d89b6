"""decode(): one buffer -> a :class:`Message`, or a :class:`CodecError` naming the fault.

``decode`` raises :class:`CodecError` (a ``ValueError``) for every malformed buffer:
truncation, bad magic, unsupported version, unknown kind/encoding/compression/flag bits,
bad dims, indices out of range or repeated, length mismatches, CRC mismatch,
decompression failure, NaN/Inf the header did not allow, trailing bytes. The CRC guards
against corruption, not against a malicious sender; still, no length in a header can make
decode read out of bounds, and a compressed body may not claim more than 1024x (lz4) or
65536x (zstd) its stored size. (pyarrow's LZ4 frame decoder does not report a body that
decompresses to fewer bytes than claimed; the CRC catches that unless it is forged.)
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from raysplit.codec import encodings
from raysplit.codec.config import COMPRESSIONS, pa_codec
from raysplit.codec.format import (
    CRC,
    FLAG_ALL_CHANNELS,
    FLAG_ALLOW_NONFINITE,
    FLAG_HAS_LABELS,
    FLAG_WIDE_INDICES,
    KINDS,
    KNOWN_FLAGS,
    LENGTHS,
    MAX_NDIM,
    TRAILER_SIZE,
    U16_MAX,
    CodecError,
    payload_nbytes,
    unpack_header,
)

__all__ = ["Message", "decode"]

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
        indices: int64 (B,), the channel indices in the order sent.
        values: float32 (N, B, *spatial), dequantised.
        labels: int64 (N,) or None.
        step: sequence number (uint64).
        client_id: uint32 sender id.
        tenant: uint32 tenant key (0 for format version 1).
        cut: uint16 split point (0 for format version 1).
        version: the format version the sender wrote.
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
    version: int = 2

    def dense(self) -> np.ndarray:
        """(N, C, *spatial) float32: values scattered at their channel indices, zeros elsewhere."""
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


def decode(buf: bytes | bytearray | memoryview | np.ndarray) -> Message:
    """Decode one buffer made by :func:`encode`. Raises CodecError for anything malformed."""
    try:
        return _decode(_as_bytes_view(buf))
    except CodecError:
        raise
    except Exception as e:  # defensive: nothing but CodecError may leave decode
        raise CodecError(f"malformed message: {type(e).__name__}: {e}") from e


def _decode(mv: memoryview) -> Message:
    total = len(mv)
    h, off = unpack_header(mv)
    b, ndim, flags = h.b, h.ndim, h.flags
    if h.kind not in KINDS:
        raise CodecError(
            f"unknown message kind {h.kind}; allowed: "
            + ", ".join(f"{k} ({v})" for k, v in sorted(KINDS.items()))
        )
    enc = encodings.by_id(h.enc_id)
    if h.comp_id >= len(COMPRESSIONS):
        allowed = ", ".join(f"{i} ({n})" for i, n in enumerate(COMPRESSIONS))
        raise CodecError(f"unknown compression id {h.comp_id}; allowed: {allowed}")
    comp = COMPRESSIONS[h.comp_id]
    if flags & ~KNOWN_FLAGS:
        raise CodecError(f"unknown flag bits 0x{flags & ~KNOWN_FLAGS:02x} in flags 0x{flags:02x}; known: 0x{KNOWN_FLAGS:02x}")
    if not 2 <= ndim <= MAX_NDIM:
        raise CodecError(f"ndim {ndim} not allowed; allowed: 2..{MAX_NDIM}")
    has_labels = bool(flags & FLAG_HAS_LABELS)
    all_channels = bool(flags & FLAG_ALL_CHANNELS)
    allow_nonfinite = bool(flags & FLAG_ALLOW_NONFINITE)
    wide = bool(flags & FLAG_WIDE_INDICES)

    if total < off + 4 * ndim:
        raise CodecError(f"truncated message: {total} bytes, header with {ndim} dims needs {off + 4 * ndim}")
    shape = struct.unpack_from(f"<{ndim}I", mv, off)
    off += 4 * ndim
    if min(shape) < 1:
        raise CodecError(f"shape {shape} has a zero dim; all dims must be >= 1")
    n, c = shape[0], shape[1]

    idx_width = 0 if all_channels else (4 if wide else 2)
    meta_end = off + b * idx_width + enc.scale_bytes * b + (4 * n if has_labels else 0)
    body_off = meta_end + TRAILER_SIZE
    if total < body_off:
        raise CodecError(f"truncated message: {total} bytes, header and metadata need {body_off}")
    raw_len, stored_len = LENGTHS.unpack_from(mv, meta_end)
    (crc_sent,) = CRC.unpack_from(mv, meta_end + LENGTHS.size)
    if total < body_off + stored_len:
        raise CodecError(
            f"truncated message: {total} bytes, header says {body_off + stored_len} "
            f"(body of {stored_len} bytes at offset {body_off})"
        )
    if total > body_off + stored_len:
        raise CodecError(
            f"{total - body_off - stored_len} trailing bytes after the body; message is {body_off + stored_len} bytes"
        )
    crc = zlib.crc32(mv[body_off:], zlib.crc32(mv[: meta_end + LENGTHS.size]))
    if crc != crc_sent:
        raise CodecError(f"CRC mismatch: header says 0x{crc_sent:08x}, contents give 0x{crc:08x}; message corrupted")

    # ---- semantic checks (the bytes are what the sender wrote)
    if b > c:
        raise CodecError(f"B={b} channels sent but C={c}; allowed: 0..{c}")
    if all_channels and b != c:
        raise CodecError(f"all_channels flag set but B={b} != C={c}")
    if wide != (c > U16_MAX):
        raise CodecError(
            f"wide_indices flag is {int(wide)} but C={c} needs {int(c > U16_MAX)} (uint32 indices iff C > {U16_MAX})"
        )
    spatial = shape[2:]
    expect_raw = payload_nbytes(n, b, spatial, enc.width)
    if raw_len != expect_raw:
        raise CodecError(f"raw payload length {raw_len} does not match shape {shape} with B={b} {enc.name}: {expect_raw}")
    if comp == "none" and stored_len != raw_len:
        raise CodecError(f"stored length {stored_len} != raw length {raw_len} with compression 'none'")

    if all_channels:
        indices = np.arange(c, dtype=np.int64)
    else:
        idx = np.frombuffer(mv, dtype="<u4" if wide else "<u2", count=b, offset=off)
        off += b * idx_width
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

    scales = None
    if enc.scale_bytes:
        scales = np.frombuffer(mv, dtype="<f4", count=b, offset=off)
        off += enc.scale_bytes * b
        if b and not (np.isfinite(scales).all() and scales.min() >= 0):
            raise CodecError(f"{enc.name} scales must be finite and >= 0")

    labels = None
    if has_labels:
        labels = np.frombuffer(mv, dtype="<i4", count=n, offset=off).astype(np.int64)
        off += 4 * n

    if comp != "none" and raw_len > stored_len * _MAX_RATIO[comp] + 4096:
        raise CodecError(
            f"header claims {raw_len} raw bytes from {stored_len} {comp} bytes, beyond {comp}'s "
            f"maximum ratio ({_MAX_RATIO[comp]}:1 with margin); message corrupted or forged"
        )

    stored = mv[body_off:]
    if comp == "none" or raw_len == 0:
        if raw_len == 0 and stored_len != 0 and comp != "none":
            raise CodecError(f"empty payload but {stored_len} stored bytes")
        body = stored
    else:
        try:
            body = pa_codec(comp, None).decompress(stored, decompressed_size=raw_len)
        except Exception as e:
            raise CodecError(f"{comp} decompression failed ({stored_len} -> {raw_len} bytes): {e}") from None
        if body.size != raw_len:
            raise CodecError(f"{comp} decompressed to {body.size} bytes; header says {raw_len}")

    values = enc.decode(body, scales, (n, b, *spatial), raw_len)
    if enc.carries_nonfinite and not allow_nonfinite and values.size and not (
        np.isfinite(values.min()) and np.isfinite(values.max())
    ):
        raise CodecError(
            f"payload contains {int((~np.isfinite(values)).sum())} NaN/Inf values but the header "
            f"does not allow non-finite values"
        )
    return Message(
        kind=h.kind,
        shape=tuple(int(d) for d in shape),
        indices=indices,
        values=values,
        labels=labels,
        step=int(h.step),
        client_id=int(h.client_id),
        tenant=int(h.tenant),
        cut=int(h.cut),
        version=int(h.version),
    )
