"""Range checks shared by the configs' ``__post_init__``: one wording for every config,
so an error always names the field, the bound and the bad value."""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

from raysplit.config.cli import option_of


def check_at_least(cfg: object, lows: Mapping[str, float]) -> None:
    """Each field named in ``lows`` is at least its bound."""
    for name, low in lows.items():
        if getattr(cfg, name) < low:
            raise ValueError(f"{name} must be >= {low}, got {getattr(cfg, name)}")


def check_counts_or_none(cfg: object, names: Iterable[str]) -> None:
    """Each named optional count is None (spelt by its option's ``none_word``: 'all', 'auto',
    ...) or at least 1."""
    words = {f.name: option_of(f)["none_word"] for f in dataclasses.fields(cfg)}
    for name in names:
        v = getattr(cfg, name)
        if v is not None and v < 1:
            raise ValueError(f"{name} must be >= 1 (or {words[name]}), got {v}")
