"""How values travel on the wire: encoding, compression and the NaN/Inf policy."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from raysplit.codec.encodings import ENCODINGS

__all__ = ["COMPRESSIONS", "CodecConfig", "pa_codec"]

COMPRESSIONS = ("none", "lz4", "zstd")
_PA_CODEC_NAME = {"lz4": "lz4", "zstd": "zstd"}  # pyarrow "lz4" is the LZ4 frame format


@functools.lru_cache(maxsize=None)
def pa_codec(compression: str, level: int | None) -> pa.Codec:
    name = _PA_CODEC_NAME[compression]
    if level is None:
        return pa.Codec(name)
    return pa.Codec(name, compression_level=level)


@dataclass(frozen=True)
class CodecConfig:
    """How values travel on the wire.

    Args:
        encoding: one of ``ENCODINGS``: "float32", "float16", "int8" (per-channel
            symmetric scale) or "uint8" (BottleFit's affine quantisation: one scale and
            zero point per tensor).
        compression: one of ``COMPRESSIONS``: "none", "lz4" or "zstd" (pyarrow codecs).
        level: compression level (None = pyarrow's default); only for lz4/zstd.
        allow_nonfinite: False: encode and decode reject NaN/Inf (and float16 overflow).
            int8 and uint8 can never carry NaN/Inf.
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
                pa_codec(self.compression, None if self.level is None else int(self.level))
            except Exception as e:  # pragma: no cover - pyarrow built without the codec
                raise ValueError(f"compression {self.compression!r} unavailable in pyarrow: {e}") from e

    @classmethod
    def parse(cls, spec: str) -> "CodecConfig":
        """Parse the CLI form ``encoding[+compression[:level]]``.

        Examples: "float32", "float16+lz4", "int8+zstd", "int8+zstd:3", "uint8".
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
