"""encode(): the B sent channels of an (N, C, *spatial) tensor -> one ``bytes`` buffer."""

from __future__ import annotations

import operator
import struct
import zlib

import numpy as np

from raysplit.codec import encodings
from raysplit.codec.config import COMPRESSIONS, CodecConfig, pa_codec
from raysplit.codec.format import (
    CRC,
    FLAG_ALL_CHANNELS,
    FLAG_ALLOW_NONFINITE,
    FLAG_HAS_LABELS,
    FLAG_WIDE_INDICES,
    KIND_ACTIVATION,
    KINDS,
    LENGTHS,
    MAX_NDIM,
    U16_MAX,
    U32_MAX,
    U64_MAX,
    CodecError,
    meta_nbytes,
    pack_header,
    payload_nbytes,
)

__all__ = ["encode", "encoded_size", "check_shape"]

_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
_COMP_ID = {name: i for i, name in enumerate(COMPRESSIONS)}


def check_shape(shape) -> tuple[int, ...]:
    try:
        dims = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise CodecError(f"shape must be a sequence of ints, got {shape!r}") from None
    if not 2 <= len(dims) <= MAX_NDIM:
        raise CodecError(f"shape {dims} has ndim {len(dims)}; allowed: 2..{MAX_NDIM} (N, C, *spatial)")
    if any(not 1 <= d <= U32_MAX for d in dims):
        raise CodecError(f"shape {dims} has a dim outside 1..{U32_MAX}")
    return dims


def _check_id(value, name: str, hi: int) -> int:
    value = operator.index(value)
    if not 0 <= value <= hi:
        raise CodecError(f"{name} {value} out of range; allowed: 0..{hi}")
    return value


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
    shape = check_shape(shape)
    n, c = shape[0], shape[1]
    b = int(n_selected)
    if not 0 <= b <= c:
        raise ValueError(f"n_selected {b} out of range; allowed: 0..{c} (C)")
    if all_channels and b != c:
        raise ValueError(f"all_channels needs n_selected == C ({c}), got {b}")
    enc = encodings.by_name(config.encoding)
    return meta_nbytes(len(shape), n, b, c, enc.scale_bytes, with_labels, all_channels) + payload_nbytes(
        n, b, shape[2:], enc.width
    )


def _index_bytes(indices, b: int, c: int) -> bytes:
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
    return idx.astype("<u4" if c > U16_MAX else "<u2", copy=False).tobytes()


def _label_bytes(labels, n: int) -> bytes:
    lab = np.asarray(labels)
    if lab.dtype.kind not in "iu":
        raise CodecError(f"labels dtype {lab.dtype} not allowed; need integers")
    if lab.shape != (n,):
        raise CodecError(f"labels shape {lab.shape} does not match (N,) = ({n},)")
    if n and (int(lab.min()) < _I32_MIN or int(lab.max()) > _I32_MAX):
        raise CodecError(f"labels outside int32 range [{_I32_MIN}, {_I32_MAX}]")
    return lab.astype("<i4", copy=False).tobytes()


def encode(
    values: np.ndarray,
    indices: np.ndarray | None,
    shape: tuple[int, ...],
    config: CodecConfig | str,
    *,
    kind: int = KIND_ACTIVATION,
    labels: np.ndarray | None = None,
    step: int = 0,
    client_id: int = 0,
    tenant: int = 0,
    cut: int = 0,
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
        tenant: the run's tenant key (uint32; see :func:`raysplit.identity.tenant_key`).
        cut: which split point of the model this tensor crosses (uint16; 0 = the first).

    Raises:
        ValueError (CodecError for bad values) with a message naming the problem.
    """
    if isinstance(config, str):
        config = CodecConfig.parse(config)
    if not isinstance(config, CodecConfig):
        raise TypeError(f"config must be a CodecConfig or a spec string, got {type(config).__name__}")
    shape = check_shape(shape)
    n, c, spatial = shape[0], shape[1], shape[2:]
    kind = operator.index(kind)
    if kind not in KINDS:
        raise CodecError(f"unknown kind {kind}; allowed: {sorted(KINDS)}")
    step = _check_id(step, "step", U64_MAX)
    client_id = _check_id(client_id, "client_id", U32_MAX)
    tenant = _check_id(tenant, "tenant", U32_MAX)
    cut = _check_id(cut, "cut", U16_MAX)

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
    if all_channels and b != c:
        raise CodecError(f"indices=None means all C={c} channels, but values carry {b}")
    idx_bytes = b"" if all_channels else _index_bytes(indices, b, c)
    has_labels = labels is not None
    lab_bytes = _label_bytes(labels, n) if has_labels else b""

    enc = encodings.by_name(config.encoding)
    body, scales = enc.encode(x, not config.allow_nonfinite)
    scale_bytes = b"" if scales is None else scales.astype("<f4", copy=False).tobytes()

    raw_len = body.nbytes
    if config.compression == "none":
        stored, stored_len = body, raw_len
    elif raw_len == 0:
        stored, stored_len = b"", 0
    else:
        stored = pa_codec(config.compression, config.level).compress(body.reshape(-1))
        stored_len = stored.size

    flags = (
        (FLAG_HAS_LABELS if has_labels else 0)
        | (FLAG_ALL_CHANNELS if all_channels else 0)
        | (FLAG_ALLOW_NONFINITE if config.allow_nonfinite else 0)
        | (FLAG_WIDE_INDICES if c > U16_MAX else 0)
    )
    prefix = b"".join(
        (
            pack_header(kind, enc.wire_id, _COMP_ID[config.compression], flags, len(shape), cut,
                        client_id, step, b, tenant),
            struct.pack(f"<{len(shape)}I", *shape),
            idx_bytes,
            scale_bytes,
            lab_bytes,
            LENGTHS.pack(raw_len, stored_len),
        )
    )
    crc = zlib.crc32(stored, zlib.crc32(prefix))
    return b"".join((prefix, CRC.pack(crc), stored))
