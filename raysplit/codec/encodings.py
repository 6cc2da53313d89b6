"""Value encodings: how a float32 (N, B, *spatial) block becomes body bytes and back.

Each encoding is one :class:`Encoding` in a registry keyed by its wire id, so a new one
(BottleFit's affine uint8, say) is one more entry, not another branch in encode/decode.

int8 quantisation is symmetric per sent channel: ``scale = max|x| / 127`` over the
channel (all N samples and positions), ``q = rint(x / scale)``, ``x_hat = q * scale``, so
``|x - x_hat| <= scale / 2`` (up to float32 rounding). An all-zero channel gets scale 0
and decodes to exact zeros; a channel whose scale would underflow float32 uses the
smallest subnormal float32 instead (the bound still holds). int8 cannot carry NaN/Inf, so it
rejects them even when ``allow_nonfinite`` is set. float16 rejects values that would
round to inf (|x| >= 65520; the largest half is 65504) unless ``allow_nonfinite`` is set.
All encodings decode to float32. Inputs may be float16/float32/float64; float64 is
rounded to float32 first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from raysplit.codec.format import CodecError

__all__ = ["Encoding", "ENCODINGS", "by_name", "by_id", "f32_to_f16_bits", "F16_TO_F32"]

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


# ---- the three encodings: encode(x (N, B, *spatial), strict) -> (body, scales or None);
#      decode(body, scales or None, vshape, raw_len) -> float32 values


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
    return body, None


def _decode_f32(body, scales, vshape, raw_len):
    raw = np.frombuffer(body, dtype="<f4", count=raw_len // 4).reshape(vshape)
    return raw.astype(np.float32)  # always a fresh, writeable, aligned copy


def _encode_f16(x: np.ndarray, strict: bool):
    if x.dtype == np.float16:
        if strict:
            check_finite(x, "values")
        return np.ascontiguousarray(x, dtype="<f2"), None
    if strict:
        lo, hi = check_finite(x, "values")
        if max(hi, -lo) >= F16_OVERFLOW:
            raise CodecError(
                f"values reach {max(hi, -lo):g}, beyond the float16 range (|x| <= {F16_MAX:g}); use "
                f"float32, scale the values, or pass allow_nonfinite=True to send them as inf"
            )
    return f32_to_f16_bits(np.ascontiguousarray(x, dtype=np.float32)), None


def _decode_f16(body, scales, vshape, raw_len):
    half = np.frombuffer(body, dtype="<u2", count=raw_len // 2)
    return np.take(F16_TO_F32, half).reshape(vshape)


def _encode_i8(x: np.ndarray, strict: bool):
    n, b = x.shape[0], x.shape[1]
    return quantize_int8(np.asarray(x, dtype=np.float32).reshape(n, b, math.prod(x.shape[2:])))


def _decode_i8(body, scales, vshape, raw_len):
    n, b = vshape[0], vshape[1]
    q = np.frombuffer(body, dtype=np.int8, count=raw_len).reshape(n, b, math.prod(vshape[2:]))
    return np.multiply(q, scales[None, :, None], dtype=np.float32).reshape(vshape)


@dataclass(frozen=True)
class Encoding:
    """One value encoding.

    Args:
        name: the CLI name ("float32", ...).
        wire_id: its id in the header's encoding byte (never reused).
        width: bytes per value in the body.
        scale_bytes: metadata bytes per sent channel (float32 scales for int8).
        carries_nonfinite: whether NaN/Inf can travel (with allow_nonfinite).
        encode: (values, strict) -> (body array, per-channel scales or None).
        decode: (body buffer, scales or None, (N, B, *spatial), raw length) -> float32 array.
    """

    name: str
    wire_id: int
    width: int
    scale_bytes: int
    carries_nonfinite: bool
    encode: Callable
    decode: Callable


_REGISTRY: tuple[Encoding, ...] = (
    Encoding("float32", 0, 4, 0, True, _encode_f32, _decode_f32),
    Encoding("float16", 1, 2, 0, True, _encode_f16, _decode_f16),
    Encoding("int8", 2, 1, 4, False, _encode_i8, _decode_i8),
)
ENCODINGS = tuple(e.name for e in _REGISTRY)
_BY_NAME = {e.name: e for e in _REGISTRY}
_BY_ID = {e.wire_id: e for e in _REGISTRY}


def by_name(name: str) -> Encoding:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown encoding {name!r}; allowed: {', '.join(ENCODINGS)}") from None


def by_id(wire_id: int) -> Encoding:
    try:
        return _BY_ID[wire_id]
    except KeyError:
        allowed = ", ".join(f"{e.wire_id} ({e.name})" for e in _REGISTRY)
        raise CodecError(f"unknown encoding id {wire_id}; allowed: {allowed}") from None
