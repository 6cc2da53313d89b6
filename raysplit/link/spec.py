"""What a link is: :class:`LinkSpec` (one client's access link), :class:`CellSpec` (a
shared medium), and the text they are written in.

A link string is a base and optional ``key=value`` settings, comma-separated::

    wifi                           a built-in profile (raysplit.link.profiles)
    10mbit/40ms/1%                 rate both ways / one-way delay / packet loss
    10mbit                         rate only (no delay, no loss)
    lte,fading=none,up=2mbit       a profile with some settings changed
    wifi,trace=lte.csv,stride=30   capacity replayed from a trace, client i from 30·i s

Keys: ``up``, ``down`` (rates, tc notation: 500kbit, 10mbit, 1gbit), ``delay``, ``jitter``
(one-way, e.g. 40ms; the delay of each transfer is drawn from a normal distribution of
that standard deviation around ``delay``, truncated at 0, like netem's ``distribution
normal``), ``loss`` (1% or 0.01, Bernoulli per packet), ``ge`` (Gilbert-Elliott burst
loss ``p/r[/loss_bad[/loss_good]]`` in netem's ``gemodel`` order), ``mtu``, ``header``
(bytes; see :mod:`raysplit.link.packets`), ``goodput`` (arq | mathis, see
:mod:`raysplit.link.loss`), ``fading`` (none | rayleigh | rician), ``snr`` (mean SNR in
dB), ``block`` (coherence time), ``k`` (Rician K), ``trace`` (CSV ``time_s, mbps``: both
directions' capacity), ``up_trace`` (the uplink's, then ``trace`` is the downlink's),
``offset`` (seconds into the trace), ``stride`` (client i starts ``offset + i·stride`` in;
a trace replaces a profile's fading),
``cell`` (the shared medium it attaches to: a cell profile's name, or none).

A YAML mapping with the same keys (plus ``profile`` or ``base``) means the same.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from raysplit.link.capacity import Capacity, Constant, Fading, TraceRate
from raysplit.link.channel import FADING
from raysplit.link.loss import GOODPUT_MODELS, GilbertElliott
from raysplit.link.packets import check_framing
from raysplit.link.units import format_rate, parse_fraction, parse_rate, parse_time

DIRECTIONS = ("up", "down")
DUPLEX = ("half", "full")


@dataclass(frozen=True)
class LinkSpec:
    """One client's access link, each direction on its own.

    Args:
        name: the profile it came from, or "custom".
        up_bps, down_bps: capacity client -> server and back, bit/s (the nominal rate when
            it fades; ignored for a direction replayed from a trace).
        delay_s: one-way latency, s.
        jitter_s: standard deviation of the one-way latency, s.
        loss: Bernoulli packet loss probability.
        ge: Gilbert-Elliott burst loss instead of Bernoulli.
        mtu, header: bytes a packet occupies on the wire, and of those the headers.
        goodput: how loss costs time and bytes: arq (retransmitted packets, drawn) or
            mathis (TCP's loss-limited rate).
        fading: none, rayleigh or rician block fading of the capacity (Shannon rate).
        snr_db: mean SNR of the fading channel, dB.
        block_s: fading coherence time, s.
        k: Rician K-factor.
        trace: CSV trace of the capacity (both directions, or the downlink with up_trace).
        up_trace: CSV trace of the uplink's capacity.
        offset_s, stride_s: replay starts offset + i·stride seconds into the trace for client i.
        cell: name of the shared medium the client attaches to (None: a dedicated link).
        source: where the numbers come from.
    """

    name: str = "custom"
    up_bps: float = 1e9
    down_bps: float = 1e9
    delay_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0
    ge: GilbertElliott | None = None
    mtu: int = 1500
    header: int = 40
    goodput: str = "arq"
    fading: str = "none"
    snr_db: float = 20.0
    block_s: float = 0.01
    k: float = 1.0
    trace: str | None = None
    up_trace: str | None = None
    offset_s: float = 0.0
    stride_s: float = 0.0
    cell: str | None = None
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("up_bps", "down_bps"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
                raise ValueError(f"link {self.name}: {name[:-4]} rate {v!r} must be a finite number > 0 bit/s")
        for name in ("delay_s", "jitter_s", "offset_s", "stride_s"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"link {self.name}: {name[:-2]} {v!r} must be >= 0 s")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"link {self.name}: loss {self.loss!r} must be in [0, 1)")
        check_framing(self.mtu, self.header)
        if self.goodput not in GOODPUT_MODELS:
            raise ValueError(f"link {self.name}: unknown goodput model {self.goodput!r}; "
                             f"choose one of {', '.join(GOODPUT_MODELS)}")
        if self.fading not in FADING:
            raise ValueError(f"link {self.name}: unknown fading {self.fading!r}; choose one of {', '.join(FADING)}")
        if not self.block_s > 0:
            raise ValueError(f"link {self.name}: fading block {self.block_s!r} must be > 0 s")
        if self.k < 0:
            raise ValueError(f"link {self.name}: Rician K {self.k!r} must be >= 0")
        if self.fading != "none" and (self.trace or self.up_trace):
            raise ValueError(f"link {self.name}: choose fading or a trace for the capacity, not both")
        if self.up_trace and not self.trace:
            raise ValueError(f"link {self.name}: up_trace needs trace (the downlink's) as well")

    # -- what it does ----------------------------------------------------------
    def rate(self, direction: str) -> float:
        _check_direction(direction)
        return self.up_bps if direction == "up" else self.down_bps

    def mean_loss(self) -> float:
        return self.ge.mean_loss() if self.ge is not None else self.loss

    def capacity(self, direction: str, client: int, seed: int) -> Capacity:
        """The capacity process of one direction of client ``client``'s copy of this link."""
        _check_direction(direction)
        path = self.up_trace if (direction == "up" and self.up_trace) else self.trace
        if path:
            from raysplit.link.profiles import load_trace

            return TraceRate(load_trace(path), self.offset_s + client * self.stride_s)
        if self.fading != "none":
            return Fading(self.rate(direction), self.snr_db, self.fading, self.block_s,
                          derive_seed(seed, client, "fading", direction), self.k)
        return Constant(self.rate(direction))

    def replace(self, **changes) -> "LinkSpec":
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        parts = [self.name, f"{format_rate(self.up_bps)} up", f"{format_rate(self.down_bps)} down",
                 f"{self.delay_s * 1e3:g} ms"]
        if self.jitter_s:
            parts.append(f"± {self.jitter_s * 1e3:g} ms")
        if self.mean_loss():
            parts.append(f"{100 * self.mean_loss():g} % loss" + (" (bursts)" if self.ge else ""))
        if self.fading != "none":
            parts.append(f"{self.fading} fading at {self.snr_db:g} dB")
        if self.trace:
            parts.append(f"trace {self.trace}")
        if self.cell:
            parts.append(f"cell {self.cell}")
        return ", ".join(parts)


@dataclass(frozen=True)
class CellSpec:
    """A shared medium: the clients attached to it share its capacity while their
    transfers overlap (max-min fair processor sharing, see ``raysplit.link.fluid``).

    Args:
        name: its name (clients attach by it).
        up_bps, down_bps: capacity of each direction (full duplex); for half duplex both
            directions share ``up_bps`` (set down_bps equal).
        duplex: half (one capacity for both directions, like a Wi-Fi channel's airtime) or
            full (separate up and down capacity, like an FDD cellular carrier).
        source: where the numbers come from.
    """

    name: str
    up_bps: float
    down_bps: float
    duplex: str = "half"
    source: str = ""

    def __post_init__(self) -> None:
        if self.duplex not in DUPLEX:
            raise ValueError(f"cell {self.name}: duplex {self.duplex!r} must be one of {', '.join(DUPLEX)}")
        for name in ("up_bps", "down_bps"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
                raise ValueError(f"cell {self.name}: {name[:-4]} capacity {v!r} must be a finite number > 0 bit/s")

    def resources(self) -> dict[str, str]:
        """{direction: resource name}: one for both directions when half duplex."""
        if self.duplex == "half":
            return {"up": f"cell:{self.name}", "down": f"cell:{self.name}"}
        return {d: f"cell:{self.name}:{d}" for d in DIRECTIONS}

    def describe(self) -> str:
        if self.duplex == "half":
            return f"{self.name}: {format_rate(self.up_bps)} shared by both directions (half duplex)"
        return f"{self.name}: {format_rate(self.up_bps)} up, {format_rate(self.down_bps)} down (full duplex)"


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r} must be 'up' or 'down'")


def derive_seed(seed: int, client: int, *what: str) -> int:
    """An independent seed for one random process of one client's link."""
    words = [int(seed), int(client), *(zlib.crc32(w.encode()) for w in what)]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


# ----------------------------------------------------------------------------- text

_LINK_KEYS = ("up", "down", "delay", "jitter", "loss", "ge", "mtu", "header", "goodput", "fading", "snr", "block",
              "k", "trace", "up_trace", "offset", "stride", "cell")


def _ge(text: Any) -> GilbertElliott | None:
    if text in (None, "none", ""):
        return None
    parts = [p for p in str(text).replace(",", "/").split("/") if p.strip()]
    if not 1 <= len(parts) <= 4:
        raise ValueError(f"ge {text!r}: write p/r[/loss_bad[/loss_good]] (netem's gemodel order), e.g. 1%/30%")
    vals = [parse_fraction(p, "ge value") for p in parts]
    p = vals[0]
    r = vals[1] if len(vals) > 1 else 1.0 - p  # netem's default r = 1 - p
    return GilbertElliott(p, r, *(vals[2:]))


def _change(key: str, value: Any) -> dict[str, Any]:
    """The LinkSpec fields one ``key=value`` setting changes."""
    k = key.strip().lower().replace("-", "_")
    if k not in _LINK_KEYS:
        raise ValueError(f"unknown link setting {key!r}; allowed: {', '.join(_LINK_KEYS)}")
    v = value.strip() if isinstance(value, str) else value
    if k in ("up", "down"):
        return {f"{k}_bps": parse_rate(v, f"{k} rate")}
    if k in ("delay", "jitter", "offset", "stride"):
        return {f"{k}_s": parse_time(v, k)}
    if k == "block":
        return {"block_s": parse_time(v, "fading block", allow_zero=False)}
    if k == "loss":
        return {"loss": parse_fraction(v, "loss", below_one=True), "ge": None}
    if k == "ge":
        return {"ge": _ge(v)}
    if k in ("mtu", "header"):
        try:
            n = int(str(v))
        except ValueError:
            raise ValueError(f"{k} {value!r} must be a whole number of bytes") from None
        return {k: n}
    if k in ("snr", "k"):
        try:
            x = float(str(v).lower().removesuffix("db"))
        except ValueError:
            raise ValueError(f"{k} {value!r} must be a number{' (dB)' if k == 'snr' else ''}") from None
        return {"snr_db" if k == "snr" else "k": x}
    if k in ("trace", "up_trace", "cell"):
        return {k: None if str(v).lower() in ("", "none") else str(v)}
    return {k: str(v)}  # goodput, fading (checked by LinkSpec)


def _base(text: str) -> LinkSpec:
    from raysplit.link.profiles import PROFILES, get_profile

    t = text.strip()
    if t.lower() in PROFILES:
        return get_profile(t.lower())
    parts = t.split("/")
    if len(parts) > 3 or not parts[0]:
        raise ValueError(f"link {text!r}: expected a profile ({', '.join(PROFILES)}) or RATE[/DELAY[/LOSS]], "
                         "e.g. 10mbit/40ms/1%")
    try:
        rate = parse_rate(parts[0], "link rate")
    except ValueError as e:
        raise ValueError(f"link {text!r}: {e}; or a profile: {', '.join(PROFILES)}") from None
    spec = LinkSpec(up_bps=rate, down_bps=rate)
    if len(parts) > 1:
        spec = spec.replace(delay_s=parse_time(parts[1], "link delay"))
    if len(parts) > 2:
        spec = spec.replace(loss=parse_fraction(parts[2], "link loss", below_one=True))
    return spec


def parse_link(value: str | Mapping | LinkSpec) -> LinkSpec:
    """A LinkSpec from a link string, a YAML mapping, or a LinkSpec (returned as is)."""
    if isinstance(value, LinkSpec):
        return value
    if isinstance(value, Mapping):
        items = dict(value)
        base = items.pop("profile", None) or items.pop("base", None)
        if base is None:
            if "up" not in items and "down" not in items and "rate" not in items:
                raise ValueError(f"link {dict(value)!r}: give a profile (or base), or the rates (rate, up, down)")
            base = str(items.pop("rate", items.get("up") or items.get("down")))
        return _with(_base(str(base)), [(str(k), v) for k, v in items.items()])
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"link {value!r}: expected a profile name or RATE[/DELAY[/LOSS]][,key=value...]")
    head, *rest = value.split(",")
    for item in rest:
        if "=" not in item:
            raise ValueError(f"link {value!r}: {item!r} is not key=value (keys: {', '.join(_LINK_KEYS)})")
    return _with(_base(head), [tuple(item.split("=", 1)) for item in rest])


def _with(spec: LinkSpec, settings: list) -> LinkSpec:
    """``spec`` with every setting applied at once (checks see the final combination)."""
    changes: dict[str, Any] = {}
    for k, v in settings:
        changes.update(_change(k, v))
    if changes.get("trace") and "fading" not in changes:
        changes["fading"] = "none"  # a trace replaces the profile's fading
    return spec.replace(**changes) if changes else spec


def parse_cell(value: str | Mapping | CellSpec) -> CellSpec:
    """A CellSpec from a cell profile's name, ``RATE`` (half duplex), ``RATE,duplex=full``,
    ``up=RATE,down=RATE`` (full duplex), or a mapping with those keys (plus ``name``)."""
    from raysplit.link.profiles import CELLS

    if isinstance(value, CellSpec):
        return value
    if isinstance(value, Mapping):
        items = {str(k).lower(): v for k, v in value.items()}
    elif isinstance(value, str) and value.strip():
        head, *rest = value.split(",")
        items = {}
        for item in rest:
            if "=" not in item:
                raise ValueError(f"cell {value!r}: {item!r} is not key=value (keys: up, down, duplex, name)")
            k, v = item.split("=", 1)
            items[k.strip().lower()] = v.strip()
        if "=" in head:
            k, v = head.split("=", 1)
            items[k.strip().lower()] = v.strip()
        else:
            items["base"] = head.strip()
    else:
        raise ValueError(f"cell {value!r}: expected a cell profile ({', '.join(CELLS)}) or a rate, e.g. 40mbit")
    unknown = set(items) - {"base", "profile", "name", "up", "down", "rate", "duplex"}
    if unknown:
        raise ValueError(f"cell {value!r}: unknown setting(s) {', '.join(sorted(unknown))}; "
                         "allowed: up, down, rate, duplex, name")
    base = items.get("base") or items.get("profile")
    if base is not None and str(base).lower() in CELLS:
        cell = CELLS[str(base).lower()]
    elif base is not None or "rate" in items:
        r = parse_rate(items.get("rate", base), "cell capacity")
        cell = CellSpec("cell", r, r, "half")
    elif "up" in items and "down" in items:
        cell = CellSpec("cell", parse_rate(items["up"], "cell up capacity"),
                        parse_rate(items["down"], "cell down capacity"), "full")
    else:
        raise ValueError(f"cell {value!r}: give a cell profile ({', '.join(CELLS)}), a rate, or both up= and down=")
    changes: dict[str, Any] = {}
    if "up" in items and base is not None:
        changes["up_bps"] = parse_rate(items["up"], "cell up capacity")
    if "down" in items and base is not None:
        changes["down_bps"] = parse_rate(items["down"], "cell down capacity")
    if "duplex" in items:
        changes["duplex"] = str(items["duplex"]).lower()
    if "name" in items:
        changes["name"] = str(items["name"])
    return dataclasses.replace(cell, **changes) if changes else cell
