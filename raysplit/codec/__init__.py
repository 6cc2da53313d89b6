"""Wire codec for split-learning messages: one contiguous ``bytes`` buffer per message.

A client sends the B selected channels of a compressed activation ``(N, C, *spatial)``
to a server; the server answers with the gradient for the same B channels. Every message
is a single ``bytes`` object (never a pickled tensor), so the traffic of a message is
exactly ``len(buffer)``. Channel indices travel in the order given (never sorted): later
features send importance-ordered slices whose receiver may keep only a prefix.

One module per concern: ``format`` (the byte layout, documented there), ``config``
(:class:`CodecConfig`), ``encodings`` (the value encodings' registry), ``encode`` and
``decode``.
"""

from raysplit.codec.config import COMPRESSIONS, CodecConfig
from raysplit.codec.decode import Message, decode
from raysplit.codec.encode import encode, encoded_size
from raysplit.codec.encodings import ENCODINGS, by_name
from raysplit.codec.format import (
    FLAG_ALL_CHANNELS,
    FLAG_ALLOW_NONFINITE,
    FLAG_HAS_LABELS,
    FLAG_WIDE_INDICES,
    FORMAT_VERSION,
    HEADER_SIZE,
    KIND_ACTIVATION,
    KIND_GRADIENT,
    KINDS,
    SUPPORTED_VERSIONS,
    CodecError,
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
    "CodecConfig",
    "Message",
    "encode",
    "decode",
    "encoded_size",
    "payload_nbytes",
]


def payload_nbytes(n: int, n_selected: int, spatial: tuple[int, ...], encoding: str) -> int:
    """Theoretical payload: ``n * n_selected * prod(spatial) * bytes_per_value`` (4, 2, 1)."""
    return _payload_nbytes_width(n, n_selected, spatial, by_name(encoding).width)
