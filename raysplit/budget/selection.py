"""Participant selection: which clients train in each round (epoch).

Federated simulators train a sample of the clients per round: FedAvg's fraction C of the
clients, drawn uniformly; FedScale (Lai et al., OSDI 2022) draws them among the clients
that are available at that moment, following traces of each device's active and
inactive periods. Here a round is an epoch of the schedule; the sync policy makes only
the round's participants train, aggregate and evaluate, and the others wait (a virtual
client waits parked: ``raysplit.runtime.virtual``).

Everything is a pure function of the seed, the round and the live clients, so a run is
reproducible and the driver can count the steps ahead.

Availability (``--availability``):

* ``always``: every live client can be drawn;
* ``markov:ON,OFF``: a synthetic model: each client alternates active and inactive
  periods whose lengths (in rounds) are geometric with means ON and OFF, starting in
  the stationary state (active with probability ON / (ON + OFF)), its own random stream;
* ``trace:PATH``: a per-client trace, a CSV file with the header ``client,start,end``:
  client ``client`` is active in rounds ``start <= r < end``; every client needs a row.

Rounds in which fewer clients are available than asked for take all that are; a round
with none is skipped (no training, no evaluation row).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np

AVAILABILITY_FORMS = "always, markov:ON,OFF (mean active/inactive rounds) or trace:PATH (CSV client,start,end)"


class Availability(Protocol):
    def active(self, client: int, rnd: int) -> bool: ...


@dataclass(frozen=True)
class Always:
    def active(self, client: int, rnd: int) -> bool:
        return True


@dataclass(frozen=True)
class Markov:
    """Active/inactive periods with geometric lengths (means in rounds), per client."""

    mean_on: float
    mean_off: float
    seed: int = 0

    def __post_init__(self) -> None:
        for name, v in (("ON", self.mean_on), ("OFF", self.mean_off)):
            if not (v >= 1 and math.isfinite(v)):
                raise ValueError(f"availability markov: mean {name} period {v!r} rounds; allowed: a number >= 1")

    def active(self, client: int, rnd: int) -> bool:
        if rnd < 0:
            raise ValueError(f"round {rnd} < 0")
        return _markov_states(self.mean_on, self.mean_off, self.seed, client, rnd // 64 + 1)[rnd]


@lru_cache(maxsize=8192)
def _markov_states(mean_on: float, mean_off: float, seed: int, client: int, blocks: int) -> tuple[bool, ...]:
    """The client's states for rounds 0 .. 64 * blocks - 1 (a prefix of one infinite draw)."""
    rng = np.random.default_rng([seed, client, 0x5E1EC7])
    state = bool(rng.random() < mean_on / (mean_on + mean_off))
    out: list[bool] = []
    while len(out) < 64 * blocks:
        mean = mean_on if state else mean_off
        out += [state] * int(rng.geometric(1.0 / mean))
        state = not state
    return tuple(out[: 64 * blocks])


@dataclass(frozen=True)
class Trace:
    """Active periods read from a trace: {client: ((start, end), ...)}, end exclusive."""

    periods: dict = field(hash=False)
    source: str = ""

    def active(self, client: int, rnd: int) -> bool:
        if client not in self.periods:
            raise KeyError(f"availability trace {self.source}: no row for client {client}")
        return any(a <= rnd < b for a, b in self.periods[client])

    def check_covers(self, clients: Iterable[int]) -> None:
        missing = sorted(set(clients) - set(self.periods))
        if missing:
            raise ValueError(f"availability trace {self.source} has no row for clients {missing[:10]}"
                             f"{' ...' if len(missing) > 10 else ''}; every client needs at least one row")


def read_trace(path: str | Path) -> Trace:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"availability trace {p}: no such file")
    periods: dict[int, list[tuple[int, int]]] = {}
    with p.open(newline="") as f:
        rows = csv.DictReader(f)
        if rows.fieldnames is None or not {"client", "start", "end"} <= set(rows.fieldnames):
            raise ValueError(f"availability trace {p}: the header must name client,start,end; got {rows.fieldnames}")
        for n, r in enumerate(rows, start=2):
            try:
                c, a, b = int(r["client"]), int(r["start"]), int(r["end"])
            except (TypeError, ValueError):
                raise ValueError(f"availability trace {p} line {n}: {r} is not three integers") from None
            if c < 0 or a < 0 or b <= a:
                raise ValueError(f"availability trace {p} line {n}: client {c} period [{a}, {b}); "
                                 "allowed: client >= 0 and 0 <= start < end")
            periods.setdefault(c, []).append((a, b))
    if not periods:
        raise ValueError(f"availability trace {p} has no rows")
    return Trace({c: tuple(v) for c, v in periods.items()}, str(p))


def parse_availability(text: str, seed: int = 0) -> Availability:
    """``always``, ``markov:ON,OFF`` or ``trace:PATH`` (see the module's docstring)."""
    kind, _, arg = str(text).partition(":")
    if kind == "always" and not arg:
        return Always()
    if kind == "markov" and arg:
        try:
            on, off = (float(v) for v in arg.split(","))
        except ValueError:
            raise ValueError(f"availability {text!r}: markov needs two numbers ON,OFF, e.g. markov:5,2") from None
        return Markov(on, off, seed)
    if kind == "trace" and arg:
        return read_trace(arg)
    raise ValueError(f"unknown availability {text!r}; allowed: {AVAILABILITY_FORMS}")


def check_per_round(value: int | float | None) -> None:
    """None (all), an integer >= 1 (clients), or a float fraction in (0, 1]."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or (isinstance(value, int) and value < 1) \
            or (isinstance(value, float) and not 0 < value <= 1):
        raise ValueError(f"clients_per_round {value!r}; allowed: all, a count (an integer >= 1), or a fraction "
                         "(a number with a point, in (0, 1], e.g. 0.1)")


def parse_per_round(text) -> int | float | None:
    """The option's text: "all", "100" (a count) or "0.1" (a fraction)."""
    if text is None or text == "all":
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = text
    else:
        t = str(text).strip()
        try:
            value = float(t) if any(ch in t for ch in ".eE") else int(t)
        except ValueError:
            raise ValueError(f"clients_per_round {text!r}; allowed: all, a count (e.g. 100) or a fraction "
                             "(e.g. 0.1)") from None
    check_per_round(value)
    return value


def round_size(per_round: int | float | None, clients: int) -> int:
    """How many of ``clients`` a round asks for: a count, or a fraction (at least one)."""
    check_per_round(per_round)
    if per_round is None:
        return clients
    if isinstance(per_round, int):
        return min(per_round, clients)
    return max(1, min(clients, int(round(per_round * clients))))


@dataclass(frozen=True)
class Selection:
    """Args:
    per_round: clients per round: a count >= 1, a fraction in (0, 1] of the live clients, or
        None (everyone available).
    availability: who can be drawn in a round (``Always``, ``Markov``, ``Trace``).
    seed: the draws' seed (with the round: the same round draws the same clients).
    """

    per_round: int | float | None = None
    availability: Availability = field(default_factory=Always)
    seed: int = 0

    def __post_init__(self) -> None:
        check_per_round(self.per_round)

    def participants(self, rnd: int, live: Iterable[int]) -> tuple[int, ...]:
        """The round's participants among ``live``: uniformly drawn from the available ones."""
        live = sorted(live)
        avail = [c for c in live if self.availability.active(c, rnd)]
        k = round_size(self.per_round, len(live)) if live else 0
        if k >= len(avail):
            return tuple(avail)
        rng = np.random.default_rng([self.seed, rnd, 0xC11E])
        return tuple(sorted(int(c) for c in rng.choice(avail, size=k, replace=False)))

    @property
    def everyone(self) -> bool:
        return self.per_round is None and isinstance(self.availability, Always)
