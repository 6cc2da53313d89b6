"""How many bits a cut's representation costs on the uplink.

The paper sends every element at 32 bits (full precision). Here the count follows the
codec the message really travels with (``--codec``): its encoding's width (float32 32,
float16 16, int8 8 bits) plus the metadata that encoding needs to be decoded (int8: one
float32 scale per sent channel), taken from the codec's public ``encoded_size`` so that
any encoding it registers is counted the same way. ``message`` counts the whole message
instead (header, shape, channel indices, CRC: exactly ``len(codec.encode(...))``).
Lossless compression (lz4, zstd) is refused: its size is known only after compressing,
and the cut must be chosen before.
"""

from __future__ import annotations

import math

from raysplit import codec
from raysplit.codec import CodecConfig

BIT_COUNTS = ("payload", "message")
_FLOAT32 = CodecConfig("float32")


def check_codec(config: CodecConfig | str) -> CodecConfig:
    config = CodecConfig.parse(config) if isinstance(config, str) else config
    if config.compression != "none":
        raise ValueError(
            f"codec {config.encoding}+{config.compression}: the energy model needs the message size before it is "
            f"sent, and {config.compression}'s depends on the data; use {', '.join(codec.ENCODINGS)} without "
            f"compression"
        )
    return config


def message_bits(shape: tuple[int, ...], sent: int, config: CodecConfig | str, count: str = "payload") -> int:
    """Bits of a message carrying ``sent`` of the C channels of an (N, C, *spatial) tensor.

    ``payload``: the values at the encoding's width plus its own decoding metadata (for
    float32: 32 bits per element, the paper's count); ``message``: the whole message.
    """
    config = check_codec(config)
    if count not in BIT_COUNTS:
        raise ValueError(f"unknown bit count {count!r}; choose one of {', '.join(BIT_COUNTS)}")
    shape = tuple(int(d) for d in shape)
    whole = sent == shape[1]
    size = codec.encoded_size(shape, sent, config, with_labels=False, all_channels=whole)
    if count == "message":
        return 8 * size
    # What the encoding adds to a float32 message of the same channels is its width
    # difference plus its metadata; the float32 values themselves are 32 bits each.
    elements = shape[0] * sent * math.prod(shape[2:])
    plain = codec.encoded_size(shape, sent, _FLOAT32, with_labels=False, all_channels=whole)
    return 8 * (4 * elements + size - plain)
