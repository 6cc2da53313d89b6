"""Wire codec for split-learning messages: one contiguous ``bytes`` buffer per message.

A client sends the B selected channels of a compressed activation ``(N, C, *spatial)``
to a server; the server answers with the gradient for the same B channels. Every message
is a single ``bytes`` object (never a pickled tensor), so the traffic of a message is
exactly ``len(buffer)``. Channel indices travel in the order given (never sorted): later
features send importance-ordered slices whose receiver may keep only a prefix.

Format version 1 (all integers little-endian; no padding anywhere)
-----------------------------------------------------------------

==========  ==========================  =====================================================
offset      size (bytes)                field
==========  ==========================  =====================================================
0           4                           magic ``b"RSPL"``
4           1                           format version (uint8) = 1
5           1                           kind (uint8): 1 activation, 2 gradient
6           1                           encoding id (uint8): 0 float32, 1 float16, 2 int8
7           1                           compression id (uint8): 0 none, 1 lz4 (frame), 2 zstd
8           1                           flags (uint8): bit0 has_labels, bit1 all_channels,
                                        bit2 allow_nonfinite, bit3 wide_indices (uint32
                                        indices; set iff C > 65535); bits 4-7 must be 0
9           1                           ndim (uint8), 2 <= ndim <= 32
10          2                           reserved (uint16), must be 0
12          4                           client_id (uint32)
16          8                           step (uint64), matches a gradient to its activation
24          4                           B = number of channels sent (uint32), 0 <= B <= C
28          4*ndim                      shape dims (uint32 each): N, C, *spatial, all >= 1
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

The message ends exactly at the end of the body; trailing bytes are an error.

Overhead: 28 + 4*ndim + index bytes + scale bytes + label bytes + 20. For N=16, B=4, 8x8
float32 with labels that is 136 bytes on a 16,384-byte payload (0.83 %).

int8 quantisation is symmetric per sent channel: ``scale = max|x| / 127`` over the
channel (all N samples and positions), ``q = rint(x / scale)``, ``x_hat = q * scale``, so
``|x - x_hat| <= scale / 2`` (up to float32 rounding). An all-zero channel gets scale 0
and decodes to exact zeros; a channel whose scale would underflow float32 uses the
smallest subnormal float32 instead (the bound still holds). int8 cannot carry NaN/Inf, so it
rejects them even when ``allow_nonfinite`` is set. float16 rejects values that would
round to inf (|x| >= 65520; the largest half is 65504) unless ``allow_nonfinite`` is set.
All encodings decode to float32. Inputs may be float16/float32/float64; float64 is
rounded to float32 first.

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

import functools
import math
import operator
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

__all__ = [
    "CodecError",
    "ENCODINGS",
    "COMPRESSIONS",
    "KIND_ACTIVATION",
    "KIND_GRADIENT",
    "FORMAT_VERSION",
    "SUPPORTED_VERSIONS",
    "CodecConfig",
    "Message",
    "encode",
    "decode",
    "encoded_size",
    "payload_nbytes",
]


class CodecError(ValueError):
    """A buffer could not be decoded (or a message could not be encoded)."""


ENCODINGS = ("float32", "float16", "int8")
COMPRESSIONS = ("none", "lz4", "zstd")
KIND_ACTIVATION = 1
KIND_GRADIENT = 2
KINDS = {KIND_ACTIVATION: "activation", KIND_GRADIENT: "gradient"}

MAGIC = b"RSPL"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MAX_NDIM = 32

FLAG_HAS_LABELS = 1 << 0
FLAG_ALL_CHANNELS = 1 << 1
FLAG_ALLOW_NONFINITE = 1 << 2
FLAG_WIDE_INDICES = 1 << 3
_KNOWN_FLAGS = FLAG_HAS_LABELS | FLAG_ALL_CHANNELS | FLAG_ALLOW_NONFINITE | FLAG_WIDE_INDICES

_HEADER = struct.Struct("<4sBBBBBBHIQI")  # magic, version, kind, enc, comp, flags, ndim, reserved, client_id, step, B
_LENGTHS = struct.Struct("<QQ")  # raw payload length, stored body length
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEADER.size  # 28
_TRAILER_SIZE = _LENGTHS.size + _CRC.size  # 20

_WIDTH = {"float32": 4, "float16": 2, "int8": 1}
_ENC_ID = {name: i for i, name in enumerate(ENCODINGS)}
_COMP_ID = {name: i for i, name in enumerate(COMPRESSIONS)}
_PA_CODEC_NAME = {"lz4": "lz4", "zstd": "zstd"}  # pyarrow "lz4" is the LZ4 frame format
# Bounds on raw/stored for a well-formed body (format limits are ~255:1 for LZ4 and
# ~32768:1 for zstd, measured on all-zero data), with a margin: a forged header must not
# make decode allocate far more than the message could ever hold.
_MAX_RATIO = {"lz4": 1024, "zstd": 65536}

_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFFFFFF
_U64_MAX = 0xFFFFFFFFFFFFFFFF
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
_F16_MAX = float(np.finfo(np.float16).max)
_F16_OVERFLOW = 65520.0  # smallest |x| that rounds to inf in float16
# Half -> float32 for every bit pattern: decoding float16 is one gather (numpy's cast is scalar).
_F16_TO_F32 = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
_F32_MIN_SUBNORMAL = np.float32(np.finfo(np.float32).smallest_subnormal)


@functools.lru_cache(maxsize=None)
def _pa_codec(compression: str, level: int | None) -> pa.Codec:
    name = _PA_CODEC_NAME[compression]
    if level is None:
        return pa.Codec(name)
    return pa.Codec(name, compression_level=level)


@dataclass(frozen=True)
class CodecConfig:
    """How values travel on the wire.

    Args:
        encoding: one of ``ENCODINGS``: "float32", "float16" or "int8" (per-channel
            symmetric scale).
        compression: one of ``COMPRESSIONS``: "none", "lz4" or "zstd" (pyarrow codecs).
        level: compression level (None = pyarrow's default); only for lz4/zstd.
        allow_nonfinite: False: encode and decode reject NaN/Inf (and float16 overflow).
            int8 can never carry NaN/Inf.
    """

    encoding: str = "float32"
    compression: str = "none"
    level: int | None = None
    allow_nonfinite: bool = False

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {self.encoding!r}; allowed: {', '.join(ENCODINGS)}")
        if self.compression not in COMPRESSIONS:
            raise ValueError(
                f"unknown compression {self.compression!r}; allowed: {', '.join(COMPRESSIONS)}"
            )
        if not isinstance(self.allow_nonfinite, (bool, np.bool_)):
            raise ValueError(f"allow_nonfinite must be a bool, got {self.allow_nonfinite!r}")
        if self.level is not None:
            if isinstance(self.level, (bool, np.bool_)) or not isinstance(self.level, (int, np.integer)):
                raise ValueError(f"level must be an int or None, got {self.level!r}")
            object.__setattr__(self, "level", int(self.level))
            if self.compression == "none":
                raise ValueError(
                    f"level {self.level!r} given with compression 'none'; a level needs lz4 or zstd"
                )
            name = _PA_CODEC_NAME[self.compression]
            lo = pa.Codec.minimum_compression_level(name)
            hi = pa.Codec.maximum_compression_level(name)
            if not lo <= self.level <= hi:
                raise ValueError(
                    f"level {self.level} out of range for {self.compression}; allowed: {lo}..{hi}"
                )
        if self.compression != "none":
            try:
                _pa_codec(self.compression, None if self.level is None else int(self.level))
            except Exception as e:  # pragma: no cover - pyarrow built without the codec
                raise ValueError(f"compression {self.compression!r} unavailable in pyarrow: {e}") from e

    @classmethod
    def parse(cls, spec: str) -> "CodecConfig":
        """Parse the CLI form ``encoding[+compression[:level]]``.

        Examples: "float32", "float16+lz4", "int8+zstd", "int8+zstd:3".
        """
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(
                f"bad codec spec {spec!r}; expected 'encoding[+compression[:level]]', "
                f"e.g. 'float32', 'float16+lz4', 'int8+zstd:3'"
            )
        text = spec.strip().lower()
        encoding, plus, rest = text.partition("+")
        compression, level = "none", None
        if plus:
            compression, colon, level_text = rest.partition(":")
            if colon:
                try:
                    level = int(level_text)
                except ValueError:
                    raise ValueError(
                        f"bad compression level {level_text!r} in codec spec {spec!r}; expected an integer"
                    ) from None
        try:
            return cls(encoding=encoding.strip(), compression=compression.strip(), level=level)
        except ValueError as e:
            raise ValueError(f"bad codec spec {spec!r}: {e}") from None

    @property
    def spec(self) -> str:
        """The CLI form of this config (inverse of :meth:`parse`, except allow_nonfinite)."""
        out = self.encoding
        if self.compression != "none":
            out += "+" + self.compression
            if self.level is not None:
                out += f":{self.level}"
        return out


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
    """

    kind: int
    shape: tuple[int, ...]
    indices: np.ndarray
    values: np.ndarray
    labels: np.ndarray | None
    step: int
    client_id: int

    def dense(self) -> np.ndarray:
        """(N, C, *spatial) float32: values scattered at their channel indices, zeros elsewhere."""
        out = np.zeros(self.shape, dtype=np.float32)
        out[:, self.indices] = self.values
        return out


def payload_nbytes(n: int, n_selected: int, spatial: tuple[int, ...], encoding: str) -> int:
    """Theoretical payload: ``n * n_selected * prod(spatial) * bytes_per_value`` (4, 2, 1)."""
    if encoding not in _WIDTH:
        raise ValueError(f"unknown encoding {encoding!r}; allowed: {', '.join(ENCODINGS)}")
    return int(n) * int(n_selected) * math.prod(int(s) for s in spatial) * _WIDTH[encoding]


def _meta_nbytes(ndim: int, n: int, b: int, c: int, encoding: str, has_labels: bool, all_channels: bool) -> int:
    size = HEADER_SIZE + 4 * ndim + _TRAILER_SIZE
    if not all_channels:
        size += b * (4 if c > _U16_MAX else 2)
    if encoding == "int8":
        size += 4 * b
    if has_labels:
        size += 4 * n
    return size


def encoded_size(
    shape: tuple[int, ...],
    n_selected: int,
    config: CodecConfig,
    *,
    with_labels: bool,
    all_channels: bool = False,
) -> int:
    """Exact ``len(encode(...))`` for compression "none"; lz4/zstd sizes depend on the data."""
    if config.compression != "none":
        raise ValueError(
            f"encoded_size is exact only for compression 'none'; {config.compression!r} is data-dependent"
        )
    shape = _check_shape(shape)
    n, c = shape[0], shape[1]
    b = int(n_selected)
    if not 0 <= b <= c:
        raise ValueError(f"n_selected {b} out of range; allowed: 0..{c} (C)")
    if all_channels and b != c:
        raise ValueError(f"all_channels needs n_selected == C ({c}), got {b}")
    return _meta_nbytes(len(shape), n, b, c, config.encoding, with_labels, all_channels) + payload_nbytes(
        n, b, shape[2:], config.encoding
    )


# ----------------------------------------------------------------------------- encode


def _check_shape(shape) -> tuple[int, ...]:
    try:
        dims = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise CodecError(f"shape must be a sequence of ints, got {shape!r}") from None
    if not 2 <= len(dims) <= MAX_NDIM:
        raise CodecError(f"shape {dims} has ndim {len(dims)}; allowed: 2..{MAX_NDIM} (N, C, *spatial)")
    if any(not 1 <= d <= _U32_MAX for d in dims):
        raise CodecError(f"shape {dims} has a dim outside 1..{_U32_MAX}")
    return dims


def _check_finite(x: np.ndarray, what: str) -> tuple[float, float]:
    """Raise if x holds NaN/Inf (two reductions, no temporary array); return (min, max)."""
    if not x.size:
        return 0.0, 0.0
    lo, hi = x.min(), x.max()  # NaN propagates through both
    if not (np.isfinite(lo) and np.isfinite(hi)):
        n_nan = int(np.isnan(x).sum())
        n_inf = int(np.isinf(x).sum())
        raise CodecError(
            f"{what} contain {n_nan} NaN and {n_inf} Inf values; "
            f"pass CodecConfig(allow_nonfinite=True) to send them (float32/float16 only)"
        )
    return float(lo), float(hi)


def _f32_to_f16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> IEEE half bits (uint16, little-endian), round to nearest even.

    Bit-exact with ``x.astype(np.float16)`` (including subnormals, overflow to inf and NaN)
    but about twice as fast: numpy's own cast is scalar. Branch-free port of
    Maratyszcza's ``fp16_ieee_from_fp32_value`` (FP16 library, MIT).
    """
    u32 = np.uint32
    w = x.reshape(-1).view(u32)
    base = np.abs(x.reshape(-1))
    with np.errstate(over="ignore", invalid="ignore"):  # signalling NaN inputs stay NaN
        base *= np.float32(2.0**112)  # overflows to inf exactly when the half overflows
        base *= np.float32(2.0**-110)
    shl1 = w << u32(1)
    bias = shl1 & u32(0xFF000000)
    np.maximum(bias, u32(0x71000000), out=bias)
    bias >>= u32(1)
    bias += u32(0x07800000)
    base += bias.view(np.float32)
    bits = base.view(u32)
    out = bits >> u32(13)
    out &= u32(0x7C00)
    bits &= u32(0xFFF)
    out += bits
    np.putmask(out, shl1 > u32(0xFF000000), u32(0x7E00))  # NaN -> quiet NaN
    sign = w >> u32(31)
    sign <<= u32(15)
    out |= sign
    return out.astype("<u2").reshape(x.shape)


def _quantize_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x: float32 (N, B, S) -> (int8 (N, B, S), float32 scales (B,))."""
    n, b, s = x.shape
    if x.size == 0:
        return np.zeros(x.shape, dtype=np.int8), np.zeros(b, dtype=np.float32)
    hi = x.max(axis=0).max(axis=1)  # ~5x faster than max(axis=(0, 2)); NaN propagates
    lo = x.min(axis=0).min(axis=1)
    if not (np.isfinite(hi).all() and np.isfinite(lo).all()):
        n_bad = int((~np.isfinite(x)).sum())
        raise CodecError(f"values contain {n_bad} NaN/Inf values; int8 encoding cannot represent them")
    absmax = np.maximum(hi, -lo).astype(np.float32)
    scale = absmax / np.float32(127.0)
    # absmax < 127 * 2**-149 underflows to 0: use the smallest subnormal, for which x / scale
    # is an exact integer, so the bound still holds. Divide (not multiply by 1/scale): the
    # reciprocal of a subnormal scale overflows.
    scale[(scale == 0) & (absmax > 0)] = _F32_MIN_SUBNORMAL
    q = x / np.where(scale > 0, scale, np.float32(1.0))[None, :, None]  # zero channel: 0 / 1
    np.rint(q, out=q)
    np.clip(q, -127.0, 127.0, out=q)
    return q.astype(np.int8), scale


def encode(
    values: np.ndarray,
    indices: np.ndarray | None,
    shape: tuple[int, ...],
    config: CodecConfig,
    *,
    kind: int = KIND_ACTIVATION,
    labels: np.ndarray | None = None,
    step: int = 0,
    client_id: int = 0,
) -> bytes:
    """Encode the B sent channels of a (N, C, *spatial) tensor into one ``bytes`` buffer.

    Args:
        values: (N, B, *spatial) float32/float64/float16 array of the sent channels.
        indices: (B,) distinct channel indices in [0, C), kept in the given order; None
            means all C channels in order (a header flag; no index bytes are sent).
        shape: the full shape (N, C, *spatial).
        config: encoding, compression and NaN/Inf policy (a spec string such as
            "int8+zstd" is parsed with :meth:`CodecConfig.parse`).
        kind: KIND_ACTIVATION or KIND_GRADIENT.
        labels: optional (N,) integer labels (sent as int32).
        step: sequence number (uint64).
        client_id: sender id (uint32).

    Raises:
        ValueError (CodecError for bad values) with a message naming the problem.
    """
    if isinstance(config, str):
        config = CodecConfig.parse(config)
    if not isinstance(config, CodecConfig):
        raise TypeError(f"config must be a CodecConfig or a spec string, got {type(config).__name__}")
    shape = _check_shape(shape)
    n, c, spatial = shape[0], shape[1], shape[2:]
    kind, step, client_id = operator.index(kind), operator.index(step), operator.index(client_id)
    if kind not in KINDS:
        raise CodecError(f"unknown kind {kind}; allowed: {sorted(KINDS)}")
    if not 0 <= step <= _U64_MAX:
        raise CodecError(f"step {step} out of range; allowed: 0..{_U64_MAX}")
    if not 0 <= client_id <= _U32_MAX:
        raise CodecError(f"client_id {client_id} out of range; allowed: 0..{_U32_MAX}")

    x = np.asarray(values)
    if x.dtype not in (np.float32, np.float64, np.float16):
        raise CodecError(f"values dtype {x.dtype} not supported; allowed: float32, float64, float16")
    if x.ndim != len(shape):
        raise CodecError(f"values have ndim {x.ndim} but shape {shape} has ndim {len(shape)}")
    if x.shape[0] != n or x.shape[2:] != spatial:
        raise CodecError(
            f"values shape {x.shape} does not match shape {shape}: need (N={n}, B, *{spatial})"
        )
    b = x.shape[1]

    all_channels = indices is None
    if all_channels:
        if b != c:
            raise CodecError(f"indices=None means all C={c} channels, but values carry {b}")
        idx_bytes = b""
    else:
        idx = np.asarray(indices)
        if idx.ndim != 1 or idx.shape[0] != b:
            raise CodecError(f"indices shape {idx.shape} does not match B={b} (values.shape[1])")
        if b and idx.dtype.kind not in "iu":
            raise CodecError(f"indices dtype {idx.dtype} not allowed; need integers")
        if b:
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= c:
                bad = lo if lo < 0 else hi
                raise CodecError(f"channel index {bad} out of range; allowed: 0..{c - 1}")
            if b > 1:
                s = np.sort(idx)
                dup = s[1:] == s[:-1]
                if dup.any():
                    raise CodecError(f"channel index {int(s[1:][dup][0])} repeated; indices must be unique")
        idx_bytes = idx.astype("<u4" if c > _U16_MAX else "<u2", copy=False).tobytes()

    has_labels = labels is not None
    lab_bytes = b""
    if has_labels:
        lab = np.asarray(labels)
        if lab.dtype.kind not in "iu":
            raise CodecError(f"labels dtype {lab.dtype} not allowed; need integers")
        if lab.shape != (n,):
            raise CodecError(f"labels shape {lab.shape} does not match (N,) = ({n},)")
        if n and (int(lab.min()) < _I32_MIN or int(lab.max()) > _I32_MAX):
            raise CodecError(f"labels outside int32 range [{_I32_MIN}, {_I32_MAX}]")
        lab_bytes = lab.astype("<i4", copy=False).tobytes()

    enc = config.encoding
    strict = not config.allow_nonfinite
    scale_bytes = b""
    if enc == "int8":
        body, scales = _quantize_int8(np.asarray(x, dtype=np.float32).reshape(n, b, math.prod(spatial)))
        scale_bytes = scales.astype("<f4", copy=False).tobytes()
    elif enc == "float16" and x.dtype == np.float16:
        if strict:
            _check_finite(x, "values")
        body = np.ascontiguousarray(x, dtype="<f2")
    elif enc == "float16":
        if strict:
            lo, hi = _check_finite(x, "values")
            if max(hi, -lo) >= _F16_OVERFLOW:
                raise CodecError(
                    f"values reach {max(hi, -lo):g}, beyond the float16 range (|x| <= {_F16_MAX:g}); use "
                    f"float32, scale the values, or pass allow_nonfinite=True to send them as inf"
                )
        body = _f32_to_f16_bits(np.ascontiguousarray(x, dtype=np.float32))
    else:
        if strict:
            _check_finite(x, "values")
        with np.errstate(over="ignore"):  # float64 beyond float32 range: reported below
            body = np.ascontiguousarray(x, dtype="<f4")
        if strict and x.dtype == np.float64:
            try:
                _check_finite(body, "values")
            except CodecError:
                raise CodecError("float64 values beyond the float32 range; scale them first") from None

    raw_len = body.nbytes
    if config.compression == "none":
        stored, stored_len = body, raw_len
    elif raw_len == 0:
        stored, stored_len = b"", 0
    else:
        stored = _pa_codec(config.compression, config.level).compress(body.reshape(-1))
        stored_len = stored.size

    flags = (
        (FLAG_HAS_LABELS if has_labels else 0)
        | (FLAG_ALL_CHANNELS if all_channels else 0)
        | (FLAG_ALLOW_NONFINITE if config.allow_nonfinite else 0)
        | (FLAG_WIDE_INDICES if c > _U16_MAX else 0)
    )
    prefix = b"".join(
        (
            _HEADER.pack(
                MAGIC, FORMAT_VERSION, kind, _ENC_ID[enc], _COMP_ID[config.compression], flags,
                len(shape), 0, client_id, step, b,
            ),
            struct.pack(f"<{len(shape)}I", *shape),
            idx_bytes,
            scale_bytes,
            lab_bytes,
            _LENGTHS.pack(raw_len, stored_len),
        )
    )
    crc = zlib.crc32(stored, zlib.crc32(prefix))
    return b"".join((prefix, _CRC.pack(crc), stored))


# ----------------------------------------------------------------------------- decode


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


def _name(table: tuple[str, ...], ident: int, what: str) -> str:
    if ident >= len(table):
        allowed = ", ".join(f"{i} ({n})" for i, n in enumerate(table))
        raise CodecError(f"unknown {what} id {ident}; allowed: {allowed}")
    return table[ident]


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
    if total < HEADER_SIZE:
        if total >= 4 and bytes(mv[:4]) != MAGIC:
            raise CodecError(f"bad magic {bytes(mv[:4])!r}; expected {MAGIC!r}")
        raise CodecError(f"truncated message: {total} bytes, the fixed header alone needs {HEADER_SIZE}")
    (magic, version, kind, enc_id, comp_id, flags, ndim, reserved, client_id, step, b) = _HEADER.unpack_from(mv, 0)
    if magic != MAGIC:
        raise CodecError(f"bad magic {magic!r}; expected {MAGIC!r}")
    if version not in SUPPORTED_VERSIONS:
        raise CodecError(
            f"unsupported format version {version}; supported: {', '.join(map(str, SUPPORTED_VERSIONS))}"
        )
    if kind not in KINDS:
        raise CodecError(
            f"unknown message kind {kind}; allowed: "
            + ", ".join(f"{k} ({v})" for k, v in sorted(KINDS.items()))
        )
    enc = _name(ENCODINGS, enc_id, "encoding")
    comp = _name(COMPRESSIONS, comp_id, "compression")
    if flags & ~_KNOWN_FLAGS:
        raise CodecError(f"unknown flag bits 0x{flags & ~_KNOWN_FLAGS:02x} in flags 0x{flags:02x}; known: 0x{_KNOWN_FLAGS:02x}")
    if not 2 <= ndim <= MAX_NDIM:
        raise CodecError(f"ndim {ndim} not allowed; allowed: 2..{MAX_NDIM}")
    if reserved != 0:
        raise CodecError(f"reserved header field is {reserved}; must be 0")
    has_labels = bool(flags & FLAG_HAS_LABELS)
    all_channels = bool(flags & FLAG_ALL_CHANNELS)
    allow_nonfinite = bool(flags & FLAG_ALLOW_NONFINITE)
    wide = bool(flags & FLAG_WIDE_INDICES)

    off = HEADER_SIZE
    if total < off + 4 * ndim:
        raise CodecError(f"truncated message: {total} bytes, header with {ndim} dims needs {off + 4 * ndim}")
    shape = struct.unpack_from(f"<{ndim}I", mv, off)
    off += 4 * ndim
    if min(shape) < 1:
        raise CodecError(f"shape {shape} has a zero dim; all dims must be >= 1")
    n, c = shape[0], shape[1]

    idx_width = 0 if all_channels else (4 if wide else 2)
    meta_end = off + b * idx_width + (4 * b if enc == "int8" else 0) + (4 * n if has_labels else 0)
    body_off = meta_end + _TRAILER_SIZE
    if total < body_off:
        raise CodecError(f"truncated message: {total} bytes, header and metadata need {body_off}")
    raw_len, stored_len = _LENGTHS.unpack_from(mv, meta_end)
    (crc_sent,) = _CRC.unpack_from(mv, meta_end + _LENGTHS.size)
    if total < body_off + stored_len:
        raise CodecError(
            f"truncated message: {total} bytes, header says {body_off + stored_len} "
            f"(body of {stored_len} bytes at offset {body_off})"
        )
    if total > body_off + stored_len:
        raise CodecError(
            f"{total - body_off - stored_len} trailing bytes after the body; message is {body_off + stored_len} bytes"
        )
    crc = zlib.crc32(mv[body_off:], zlib.crc32(mv[: meta_end + _LENGTHS.size]))
    if crc != crc_sent:
        raise CodecError(f"CRC mismatch: header says 0x{crc_sent:08x}, contents give 0x{crc:08x}; message corrupted")

    # ---- semantic checks (the bytes are what the sender wrote)
    if b > c:
        raise CodecError(f"B={b} channels sent but C={c}; allowed: 0..{c}")
    if all_channels and b != c:
        raise CodecError(f"all_channels flag set but B={b} != C={c}")
    if wide != (c > _U16_MAX):
        raise CodecError(
            f"wide_indices flag is {int(wide)} but C={c} needs {int(c > _U16_MAX)} (uint32 indices iff C > {_U16_MAX})"
        )
    spatial = shape[2:]
    expect_raw = payload_nbytes(n, b, spatial, enc)
    if raw_len != expect_raw:
        raise CodecError(f"raw payload length {raw_len} does not match shape {shape} with B={b} {enc}: {expect_raw}")
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
    if enc == "int8":
        scales = np.frombuffer(mv, dtype="<f4", count=b, offset=off)
        off += 4 * b
        if b and not (np.isfinite(scales).all() and scales.min() >= 0):
            raise CodecError("int8 scales must be finite and >= 0")

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
            body = _pa_codec(comp, None).decompress(stored, decompressed_size=raw_len)
        except Exception as e:
            raise CodecError(f"{comp} decompression failed ({stored_len} -> {raw_len} bytes): {e}") from None
        if body.size != raw_len:
            raise CodecError(f"{comp} decompressed to {body.size} bytes; header says {raw_len}")

    vshape = (n, b, *spatial)
    if enc == "int8":
        q = np.frombuffer(body, dtype=np.int8, count=raw_len).reshape(n, b, math.prod(spatial))
        values = np.multiply(q, scales[None, :, None], dtype=np.float32).reshape(vshape)
    else:
        if enc == "float16":
            half = np.frombuffer(body, dtype="<u2", count=raw_len // 2)
            values = np.take(_F16_TO_F32, half).reshape(vshape)
        else:
            raw = np.frombuffer(body, dtype="<f4", count=raw_len // 4).reshape(vshape)
            values = raw.astype(np.float32)  # always a fresh, writeable, aligned copy
        if not allow_nonfinite and values.size and not (
            np.isfinite(values.min()) and np.isfinite(values.max())
        ):
            raise CodecError(
                f"payload contains {int((~np.isfinite(values)).sum())} NaN/Inf values but the header "
                f"does not allow non-finite values"
            )
    return Message(
        kind=kind,
        shape=tuple(int(d) for d in shape),
        indices=indices,
        values=values,
        labels=labels,
        step=int(step),
        client_id=int(client_id),
    )
