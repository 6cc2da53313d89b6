"""Argument checks shared by the loaders and the batch iterator, so that a bad value is
reported the same way wherever it is passed.
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_int"]


def check_int(value: object, what: str, minimum: int = 0) -> int:
    """``value`` as an int if it is an integer (not a bool) ``>= minimum``, else a
    ``ValueError`` naming ``what`` and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)
