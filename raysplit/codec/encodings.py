"""Value encodings: how a float32 (N, B, *spatial) block becomes body bytes and back.

Each encoding is one :class:`Encoding` in a registry keyed by its wire id, so a new one is
one more entry, not another branch in encode/decode.

int8 quantisation is symmetric per sent channel: ``scale = max|x| / 127`` over the
channel (all N samples and positions), ``q = rint(x / scale)``, ``x_hat = q * scale``, so
``|x - x_hat| <= scale / 2`` (up to float32 rounding). An all-zero channel gets scale 0
and decodes to exact zeros; a channel whose scale would underflow float32 uses the
smallest subnormal float32 instead (the bound still holds).

uint8 is BottleFit's bottleneck quantisation (Matsubara et al.; sc2-benchmark's
``quantize_tensor``): affine, one scale and one zero point for the whole tensor,
``scale = (max - min) / 255``, ``zero_point = rint(-min / scale)`` in 0..255,
``q = clip(rint(x / scale) + zero_point, 0, 255)``, ``x_hat = (q - zero_point) * scale``
(the formula of ``torch.quantize_per_tensor`` with ``quint8``). One departure, written
down: the range is widened to include 0 (``min <= 0 <= max``, as torch's observers do),
so zero (ReLU outputs, zero padding) decodes exactly and a constant tensor is not a
division by zero; for ReLU activations (min = 0) this is BottleFit's range exactly.
``|x - x_hat| <= scale / 2`` up to float32 rounding.

int8 and uint8 cannot carry NaN/Inf, so they reject them even when ``allow_nonfinite`` is
set. float16 rejects values that would round to inf (|x| >= 65520; the largest half is
65504) unless ``allow_nonfinite`` is set. All encodings decode to float32. Inputs may be
float16/float32/float64; float64 is rounded to float32 first.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from raysplit.codec.format import CodecError

__all__ = ["Encoding", "ENCODINGS", "by_name", "by_id", "f32_to_f16_bits", "F16_TO_F32", "quantize_uint8"]

F16_MAX = float(np.finfo(np.float16).max)
F16_OVERFLOW = 65520.0  # smallest |x| that rounds to inf in float16
# Half -> float32 for every bit pattern: decoding float16 is one gather (numpy's cast is scalar).
F16_TO_F32 = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
_F32_MIN_SUBNORMAL = np.float32(np.finfo(np.float32).smallest_subnormal)


def check_finite(x: np.ndarray, what: str) -> tuple[float, float]:
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


def f32_to_f16_bits(x: np.ndarray) -> np.ndarray:
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


def quantize_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def quantize_uint8(x: np.ndarray) -> tuple[np.ndarray, float, int]:
    """x: float32, any shape -> (uint8 of the same shape, scale, zero point); see the module
    docstring. The range is computed in float64 so that max - min cannot overflow."""
    if x.size == 0:
        return np.zeros(x.shape, dtype=np.uint8), 0.0, 0
    lo, hi = float(x.min()), float(x.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        n_bad = int((~np.isfinite(x)).sum())
        raise CodecError(f"values contain {n_bad} NaN/Inf values; uint8 encoding cannot represent them")
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi == lo:  # all zeros
        return np.zeros(x.shape, dtype=np.uint8), 0.0, 0
    scale = np.float32((hi - lo) / 255.0)
    if scale == 0:  # the range underflows float32: the smallest subnormal keeps x / scale exact
        scale = _F32_MIN_SUBNORMAL
    zero_point = int(min(255, max(0, round(-lo / float(scale)))))
    q = x / scale  # divide (not multiply by 1/scale): the reciprocal of a subnormal overflows
    np.rint(q, out=q)
    q += np.float32(zero_point)
    np.clip(q, 0.0, 255.0, out=q)
    return q.astype(np.uint8), float(scale), zero_point


# ---- the encodings: encode(x (N, B, *spatial), strict) -> (body (N, B, ...), param bytes);
#      read_params(memoryview of the param bytes, B) -> validated params (or None);
#      decode(body, params, vshape, raw_len, channel_axis) -> float32 values of vshape, whose
#      axis ``channel_axis`` holds the first vshape[channel_axis] sent channels.


def _no_params(mv, b):
    return None


def _encode_f32(x: np.ndarray, strict: bool):
    if strict:
        check_finite(x, "values")
    with np.errstate(over="ignore"):  # float64 beyond float32 range: reported below
        body = np.ascontiguousarray(x, dtype="<f4")
    if strict and x.dtype == np.float64:
        try:
            check_finite(body, "values")
        except CodecError:
            raise CodecError("float64 values beyond the float32 range; scale them first") from None
    return body, b""


def _decode_f32(body, params, vshape, raw_len, channel_axis):
    raw = np.frombuffer(body, dtype="<f4", count=raw_len // 4).reshape(vshape)
    return raw.astype(np.float32)  # always a fresh, writeable, aligned copy


def _encode_f16(x: np.ndarray, strict: bool):
    if x.dtype == np.float16:
        if strict:
            check_finite(x, "values")
        return np.ascontiguousarray(x, dtype="<f2"), b""
    if strict:
        lo, hi = check_finite(x, "values")
        if max(hi, -lo) >= F16_OVERFLOW:
            raise CodecError(
                f"values reach {max(hi, -lo):g}, beyond the float16 range (|x| <= {F16_MAX:g}); use "
                f"float32, scale the values, or pass allow_nonfinite=True to send them as inf"
            )
    return f32_to_f16_bits(np.ascontiguousarray(x, dtype=np.float32)), b""


def _decode_f16(body, params, vshape, raw_len, channel_axis):
    half = np.frombuffer(body, dtype="<u2", count=raw_len // 2)
    return np.take(F16_TO_F32, half).reshape(vshape)


def _encode_i8(x: np.ndarray, strict: bool):
    n, b = x.shape[0], x.shape[1]
    q, scales = quantize_int8(np.asarray(x, dtype=np.float32).reshape(n, b, math.prod(x.shape[2:])))
    return q.reshape(x.shape), scales.astype("<f4", copy=False).tobytes()


def _read_i8(mv, b):
    scales = np.frombuffer(mv, dtype="<f4", count=b)
    if b and not (np.isfinite(scales).all() and scales.min() >= 0):
        raise CodecError("int8 scales must be finite and >= 0")
    return scales


def _decode_i8(body, scales, vshape, raw_len, channel_axis):
    b = vshape[channel_axis]
    lead, rest = math.prod(vshape[:channel_axis]), math.prod(vshape[channel_axis + 1 :])
    q = np.frombuffer(body, dtype=np.int8, count=raw_len).reshape(lead, b, rest)
    return np.multiply(q, scales[None, :b, None], dtype=np.float32).reshape(vshape)


_U8_PARAMS = struct.Struct("<fB")  # scale, zero point


def _encode_u8(x: np.ndarray, strict: bool):
    q, scale, zero_point = quantize_uint8(np.asarray(x, dtype=np.float32))
    return q, _U8_PARAMS.pack(scale, zero_point)


def _read_u8(mv, b):
    scale, zero_point = _U8_PARAMS.unpack(mv)
    if not (math.isfinite(scale) and scale >= 0):
        raise CodecError(f"uint8 scale must be finite and >= 0, got {scale!r}")
    return np.float32(scale), zero_point


def _decode_u8(body, params, vshape, raw_len, channel_axis):
    scale, zero_point = params
    q = np.frombuffer(body, dtype=np.uint8, count=raw_len)
    out = np.subtract(q, np.float32(zero_point), dtype=np.float32)
    out *= scale
    return out.reshape(vshape)


@dataclass(frozen=True)
class Encoding:
    """One value encoding.

    Args:
        name: the CLI name ("float32", ...).
        wire_id: its id in the header's encoding byte (never reused).
        width: bytes per value in the body.
        scale_bytes: metadata bytes per sent channel (float32 scales for int8).
        tensor_bytes: metadata bytes per message (uint8's scale and zero point).
        carries_nonfinite: whether NaN/Inf can travel (with allow_nonfinite).
        since_version: the first format version that has it.
        encode: (values, strict) -> (body array (N, B, ...), parameter bytes).
        read_params: (memoryview of the parameter bytes, B) -> parameters, validated.
        decode: (body buffer, parameters, value shape, raw length, channel axis) -> float32.
    """

    name: str
    wire_id: int
    width: int
    scale_bytes: int
    tensor_bytes: int
    carries_nonfinite: bool
    since_version: int
    encode: Callable
    read_params: Callable
    decode: Callable

    def param_nbytes(self, b: int) -> int:
        """Metadata bytes of a message that sends ``b`` channels."""
        return self.scale_bytes * b + self.tensor_bytes


_REGISTRY: tuple[Encoding, ...] = (
    Encoding("float32", 0, 4, 0, 0, True, 1, _encode_f32, _no_params, _decode_f32),
    Encoding("float16", 1, 2, 0, 0, True, 1, _encode_f16, _no_params, _decode_f16),
    Encoding("int8", 2, 1, 4, 0, False, 1, _encode_i8, _read_i8, _decode_i8),
    Encoding("uint8", 3, 1, 0, _U8_PARAMS.size, False, 3, _encode_u8, _read_u8, _decode_u8),
)
ENCODINGS = tuple(e.name for e in _REGISTRY)
_BY_NAME = {e.name: e for e in _REGISTRY}
_BY_ID = {e.wire_id: e for e in _REGISTRY}


def by_name(name: str) -> Encoding:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown encoding {name!r}; allowed: {', '.join(ENCODINGS)}") from None


def by_id(wire_id: int, version: int | None = None) -> Encoding:
    """The encoding with this wire id; with ``version``, only one that version has."""
    enc = _BY_ID.get(wire_id)
    if enc is None or (version is not None and version < enc.since_version):
        known = [e for e in _REGISTRY if version is None or version >= e.since_version]
        allowed = ", ".join(f"{e.wire_id} ({e.name})" for e in known)
        where = f" in format version {version}" if version is not None else ""
        raise CodecError(f"unknown encoding id {wire_id}{where}; allowed: {allowed}")
    return enc
