"""Wire codec for split-learning messages: one contiguous ``bytes`` buffer per message.

A client sends the B selected channels of a compressed activation ``(N, C, *spatial)``
to a server; the server answers with the gradient for the same B channels. Every message
is a single ``bytes`` object (never a pickled tensor), so the traffic of a message is
exactly ``len(buffer)``. Channel indices travel in the order given (never sorted). The
channel-major layout cuts them into slices with a checksum each, so a receiver of an
importance-ordered message that a link cut short keeps every slice that arrived whole
(NAIR); an optional key adds HMAC-SHA256 tags that the receiver checks.

One module per concern: ``format`` (the byte layout, documented there), ``config``
(:class:`CodecConfig`), ``encodings`` (the value encodings' registry), ``encode`` and
``decode``.
"""

from raysplit.codec.config import COMPRESSIONS, CodecConfig
from raysplit.codec.decode import Message, decode, slice_ends
from raysplit.codec.encode import encode, encoded_size
from raysplit.codec.encodings import ENCODINGS, by_name
from raysplit.codec.format import (
    FLAG_ALL_CHANNELS,
    FLAG_ALLOW_NONFINITE,
    FLAG_CHANNEL_MAJOR,
    FLAG_HAS_LABELS,
    FLAG_KEYED,
    FLAG_WIDE_INDICES,
    FORMAT_VERSION,
    HEADER_SIZE,
    KIND_ACTIVATION,
    KIND_GRADIENT,
    KINDS,
    LAYOUTS,
    MIN_KEY_BYTES,
    SUPPORTED_VERSIONS,
    TAG_SIZE,
    CodecError,
    split_channels,
)
from raysplit.codec.format import payload_nbytes as _payload_nbytes_width

__all__ = [
    "CodecError",
    "ENCODINGS",
    "COMPRESSIONS",
    "KIND_ACTIVATION",
    "KIND_GRADIENT",
    "KINDS",
    "FORMAT_VERSION",
    "SUPPORTED_VERSIONS",
    "HEADER_SIZE",
    "FLAG_HAS_LABELS",
    "FLAG_ALL_CHANNELS",
    "FLAG_ALLOW_NONFINITE",
    "FLAG_WIDE_INDICES",
    "FLAG_CHANNEL_MAJOR",
    "FLAG_KEYED",
    "LAYOUTS",
    "TAG_SIZE",
    "MIN_KEY_BYTES",
    "CodecConfig",
    "Message",
    "encode",
    "decode",
    "encoded_size",
    "slice_ends",
    "split_channels",
    "payload_nbytes",
]


def payload_nbytes(n: int, n_selected: int, spatial: tuple[int, ...], encoding: str) -> int:
    """Theoretical payload: ``n * n_selected * prod(spatial) * bytes_per_value`` (4, 2, 1, 1)."""
    return _payload_nbytes_width(n, n_selected, spatial, by_name(encoding).width)
