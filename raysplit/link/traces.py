"""Throughput traces: CSV files of ``time_s, mbps``, and a synthetic generator.

Public throughput traces (3G/HSDPA Norway, Ghent 4G/LTE, FCC broadband, Lumos5G) are
distributed as time / throughput samples; none installs from a package registry, so
raysplit reads users' files in that shape and ships a generator for fluctuating ones.

File format: one sample a line, ``time_s, mbps`` (comma, semicolon, tab or spaces between
them), times strictly increasing from >= 0; a first line that is not numbers is a header;
``#`` starts a comment. The rate holds from its sample's time to the next sample's, and
the last sample holds for the median gap, so a trace of n samples one second apart is
n seconds long. Replay loops around (``period``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_SPLIT = re.compile(r"[,;\t ]+")


@dataclass(frozen=True)
class Trace:
    """A piecewise-constant rate over time.

    Args:
        times: sample times in seconds, strictly increasing, the first >= 0.
        mbps: the rate from each sample time to the next, in Mbit/s (>= 0).
        name: where it came from (for messages).
    """

    times: tuple[float, ...]
    mbps: tuple[float, ...]
    name: str = "trace"

    def __post_init__(self) -> None:
        if not self.times or len(self.times) != len(self.mbps):
            raise ValueError(f"{self.name}: a trace needs as many times as rates, at least one each")
        t = np.asarray(self.times, dtype=float)
        if t[0] < 0 or (len(t) > 1 and not np.all(np.diff(t) > 0)):
            raise ValueError(f"{self.name}: sample times must start at >= 0 s and strictly increase")
        r = np.asarray(self.mbps, dtype=float)
        if not np.all(np.isfinite(r)) or np.any(r < 0):
            raise ValueError(f"{self.name}: rates must be finite and >= 0 Mbit/s")
        if not r.max() > 0:
            raise ValueError(f"{self.name}: every rate is 0 Mbit/s: nothing could ever be sent")

    @property
    def period(self) -> float:
        """Length of one replay: last time + the median gap (1 s for a single sample)."""
        t = self.times
        gap = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
        return t[-1] + gap

    def index_at(self, t: float) -> tuple[int, float]:
        """(sample index, start of the replay lap) holding at time ``t`` (looping)."""
        lap = math.floor(t / self.period) * self.period
        i = int(np.searchsorted(self.times, t - lap, side="right")) - 1
        return max(i, 0), lap

    def mbps_at(self, t: float) -> float:
        i, _ = self.index_at(t)
        return self.mbps[i]

    def next_change(self, t: float) -> float:
        """The first sample boundary strictly after ``t``."""
        i, lap = self.index_at(t)
        nxt = self.times[i + 1] + lap if i + 1 < len(self.times) else lap + self.period
        return nxt if nxt > t else math.nextafter(t, math.inf)

    def mean_mbps(self) -> float:
        """Time-average rate over one period."""
        t = np.append(np.asarray(self.times), self.period)
        w = np.diff(t)
        w[0] += self.times[0]  # before the first sample the first rate holds (lap start at 0)
        return float(np.dot(w, self.mbps) / w.sum())


def read_trace(path: str | Path) -> Trace:
    """A ``time_s, mbps`` CSV file (see the module docstring); errors name the line."""
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"trace file {str(p)!r} not found (expected CSV lines 'time_s, mbps')") from None
    times, rates, first = [], [], True
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        cells = [c for c in _SPLIT.split(text) if c]
        try:
            t, r = float(cells[0]), float(cells[1])
        except (ValueError, IndexError):
            if first:  # a header line
                first = False
                continue
            raise ValueError(f"{p}:{n}: expected 'time_s, mbps', got {line.strip()!r}") from None
        first = False
        times.append(t)
        rates.append(r)
    if not times:
        raise ValueError(f"{p}: no samples (expected CSV lines 'time_s, mbps')")
    try:
        return Trace(tuple(times), tuple(rates), name=str(p))
    except ValueError as e:
        raise ValueError(str(e)) from None


def write_trace(path: str | Path, trace: Trace) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{t:.6g},{r:.6g}\n" for t, r in zip(trace.times, trace.mbps))
    p.write_text("time_s,mbps\n" + body)
    return p


def synthetic_trace(mean_mbps: float, *, cv: float = 0.5, corr_s: float = 5.0, duration_s: float = 600.0,
                    step_s: float = 1.0, floor_mbps: float = 0.0, seed: int = 0, name: str = "synthetic") -> Trace:
    """A fluctuating trace: a log-normal AR(1) process sampled every ``step_s``.

    log(rate) is a stationary Gaussian AR(1) with correlation exp(-step/corr_s) between
    samples, scaled so that the rate has mean ``mean_mbps`` and coefficient of variation
    ``cv`` (std / mean), the shape of measured cellular throughput (heavy right tail,
    seconds-long fades); rates below ``floor_mbps`` are raised to it.
    """
    if not mean_mbps > 0 or cv < 0 or not corr_s > 0 or not duration_s > 0 or not step_s > 0:
        raise ValueError("synthetic_trace needs mean > 0, cv >= 0, corr_s > 0, duration > 0, step > 0")
    n = max(1, int(round(duration_s / step_s)))
    rng = np.random.default_rng(seed)
    s2 = math.log1p(cv * cv)  # variance of log(rate) for the wanted cv
    mu = math.log(mean_mbps) - s2 / 2
    a = math.exp(-step_s / corr_s)
    z = np.empty(n)
    z[0] = rng.standard_normal()
    noise = rng.standard_normal(n) * math.sqrt(1 - a * a)
    for i in range(1, n):
        z[i] = a * z[i - 1] + noise[i]
    rates = np.maximum(np.exp(mu + math.sqrt(s2) * z), floor_mbps)
    return Trace(tuple(float(i * step_s) for i in range(n)), tuple(float(r) for r in rates), name=name)
