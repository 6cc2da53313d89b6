"""encode(): the B sent channels of an (N, C, *spatial) tensor -> one ``bytes`` buffer."""

from __future__ import annotations

import hashlib
import hmac
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
    FLAG_CHANNEL_MAJOR,
    FLAG_HAS_LABELS,
    FLAG_KEYED,
    FLAG_WIDE_INDICES,
    KIND_ACTIVATION,
    KINDS,
    LAYOUTS,
    LENGTHS,
    MAX_NDIM,
    MIN_KEY_BYTES,
    SLICE_COUNT,
    SLICE_ENTRY,
    U16_MAX,
    U32_MAX,
    U64_MAX,
    CodecError,
    layout_nbytes,
    meta_nbytes,
    pack_header,
    payload_nbytes,
    split_channels,
)

__all__ = ["encode", "encoded_size", "check_shape", "check_key"]

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


def check_key(key) -> bytes | None:
    """None, or the HMAC key as bytes (at least MIN_KEY_BYTES long)."""
    if key is None:
        return None
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise CodecError(f"key must be bytes (or None), got {type(key).__name__}")
    key = bytes(key)
    if len(key) < MIN_KEY_BYTES:
        raise CodecError(f"key of {len(key)} bytes is too short for HMAC-SHA256; need at least {MIN_KEY_BYTES}")
    return key


def _check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise CodecError(f"unknown layout {layout!r}; allowed: {', '.join(LAYOUTS)}")
    return layout


def encoded_size(
    shape: tuple[int, ...],
    n_selected: int,
    config: CodecConfig,
    *,
    with_labels: bool,
    all_channels: bool = False,
    layout: str = "sample",
    slices=None,
    keyed: bool = False,
) -> int:
    """Exact ``len(encode(...))`` for compression "none"; lz4/zstd sizes depend on the data.

    ``layout``, ``slices`` and ``keyed`` (a key was given) as for :func:`encode`.
    """
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
    _check_layout(layout)
    if layout == "sample" and slices is not None:
        raise ValueError(f"slices {slices!r} given with layout 'sample'; slices need layout 'channel'")
    n_slices = len(split_channels(b, slices)) if layout == "channel" else 0
    enc = encodings.by_name(config.encoding)
    return (
        meta_nbytes(len(shape), n, b, c, enc.param_nbytes(b), with_labels, all_channels)
        + layout_nbytes(layout, n_slices, bool(keyed))
        + payload_nbytes(n, b, shape[2:], enc.width)
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
    layout: str = "sample",
    slices=None,
    key: bytes | None = None,
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
        layout: "sample" (one body of (N, B, ...), one CRC: a short buffer is an error) or
            "channel" (slices of channels in the order sent, each with its own CRC: a
            buffer cut short decodes to the slices that arrived whole).
        slices: channel-major only: None (one slice per channel), J (J slices as equal as
            possible) or the channels of each slice (summing to B).
        key: HMAC-SHA256 key (>= 16 bytes): the message carries tags that
            ``decode(buf, key=key)`` checks. None: no tag.

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
    layout = _check_layout(layout)
    key = check_key(key)

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
    if layout == "sample" and slices is not None:
        raise CodecError(f"slices {slices!r} given with layout 'sample'; slices need layout 'channel'")
    counts = split_channels(b, slices) if layout == "channel" else ()

    all_channels = indices is None
    if all_channels and b != c:
        raise CodecError(f"indices=None means all C={c} channels, but values carry {b}")
    idx_bytes = b"" if all_channels else _index_bytes(indices, b, c)
    has_labels = labels is not None
    lab_bytes = _label_bytes(labels, n) if has_labels else b""

    enc = encodings.by_name(config.encoding)
    body, param_bytes = enc.encode(x, not config.allow_nonfinite)
    if layout == "channel":
        # (N, B, ...) -> (B, N, ...): a slice of channels is then one contiguous run of bytes
        body = np.ascontiguousarray(np.moveaxis(body, 1, 0))
        bounds = np.cumsum((0,) + counts)
        parts = [_store(body[a:e], config) for a, e in zip(bounds[:-1], bounds[1:])]
    else:
        parts = [_store(body, config)]
    raw_len = body.nbytes
    stored_len = sum(_nbytes(p) for p in parts)

    flags = (
        (FLAG_HAS_LABELS if has_labels else 0)
        | (FLAG_ALL_CHANNELS if all_channels else 0)
        | (FLAG_ALLOW_NONFINITE if config.allow_nonfinite else 0)
        | (FLAG_WIDE_INDICES if c > U16_MAX else 0)
        | (FLAG_CHANNEL_MAJOR if layout == "channel" else 0)
        | (FLAG_KEYED if key is not None else 0)
    )
    prefix = [
        pack_header(kind, enc.wire_id, _COMP_ID[config.compression], flags, len(shape), cut,
                    client_id, step, b, tenant),
        struct.pack(f"<{len(shape)}I", *shape),
        idx_bytes,
        param_bytes,
        lab_bytes,
        LENGTHS.pack(raw_len, stored_len),
    ]
    out: list = []
    mac = None if key is None else hmac.new(key, digestmod=hashlib.sha256)

    def emit(*pieces) -> None:
        out.extend(pieces)
        if mac is not None:
            for piece in pieces:
                mac.update(piece)

    def tag() -> None:  # HMAC of every byte emitted so far
        if mac is not None:
            emit(mac.copy().digest())

    if layout == "sample":
        head = b"".join(prefix)
        emit(head, CRC.pack(zlib.crc32(parts[0], zlib.crc32(head))), parts[0])
        tag()
        return b"".join(out)
    prefix.append(SLICE_COUNT.pack(len(counts)))
    prefix.extend(SLICE_ENTRY.pack(k, _nbytes(p)) for k, p in zip(counts, parts))
    head = b"".join(prefix)
    crc = zlib.crc32(head)
    emit(head, CRC.pack(crc))
    tag()
    for part in parts:
        crc = zlib.crc32(part, crc)  # chained: a slice's CRC depends on every slice before it
        emit(part, CRC.pack(crc))
        tag()
    return b"".join(out)


def _nbytes(part) -> int:
    return memoryview(part).nbytes


def _store(body: np.ndarray, config: CodecConfig):
    """The stored bytes of a body (or of one slice): itself, or lz4/zstd-compressed."""
    if config.compression == "none":
        return body
    if body.nbytes == 0:
        return b""
    return pa_codec(config.compression, config.level).compress(body.reshape(-1))
