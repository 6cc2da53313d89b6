"""A fluid (flow-level) network simulation: jobs of stages over shared resources.

A *resource* is anything with a capacity that moves over time (a client's access link,
a shared Wi-Fi cell, a shard's wired backhaul, a shard's processor): capacity in units
per second from a :mod:`raysplit.link.capacity` process. A *job* is one client's
sequence of stages, each either

* a **flow** of ``size`` units over a set of resources (a transfer over its path, or the
  server's work on a shard's processor), optionally capped at ``cap`` units/s, followed
  by a fixed delay ``then`` (propagation latency, retransmission feedback), or
* a **wait** of a fixed number of seconds (the client's own compute).

Sharing rule: at every moment the flows in progress get the **max-min fair** rates over
the resources they cross (progressive filling, Bertsekas & Gallager, *Data Networks*,
sec. 6.5.2): every flow's rate rises together until a resource it uses is full or it
reaches its own cap; those flows freeze and the rest keep rising. On one resource this
is processor sharing (n flows get C/n each); a flow capped lower by its own link leaves
its share to the others. Rates are recomputed at every event (a flow starts or ends, a
capacity changes), so a flow's finish time is exact for piecewise-constant capacities.

:class:`FluidNetwork` is pure and deterministic: the same jobs give the same times, in
any order of submission, and it never looks at a clock. ``advance(t)`` settles every
event up to time t; the caller decides which t is safe (``raysplit.link.medium``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

EPS = 1e-12


class CapacityProcess(Protocol):
    def rate_at(self, t: float) -> float: ...

    def next_change(self, t: float) -> float: ...


@dataclass(frozen=True)
class Stage:
    """Args:
    kind: "flow" or "wait".
    size: units to move (flow) or seconds (wait).
    resources: what a flow crosses.
    cap: the flow's own rate limit, units/s.
    then: seconds added after the flow has moved its units (latency).
    """

    kind: str
    size: float
    resources: tuple[str, ...] = ()
    cap: float = math.inf
    then: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("flow", "wait"):
            raise ValueError(f"stage kind {self.kind!r} must be 'flow' or 'wait'")
        if not (self.size >= 0 and math.isfinite(self.size)):
            raise ValueError(f"stage size {self.size!r} must be finite and >= 0")
        if self.then < 0 or not self.cap > 0:
            raise ValueError(f"stage needs then >= 0 and cap > 0, got then {self.then}, cap {self.cap}")
        if self.kind == "flow" and self.size > 0 and not self.resources:
            raise ValueError("a flow needs at least one resource")


@dataclass
class Job:
    """A job in the network; ``ends[i]`` is when stage i (and its ``then``) ended."""

    id: int
    client: int
    start: float
    stages: tuple[Stage, ...]
    tag: object = None
    index: int = -1  # current stage; -1 = not started
    remaining: float = 0.0
    moving: bool = False  # a flow still moving units (else waiting until ``until``)
    until: float = 0.0
    rate: float = 0.0
    ends: list[float] = field(default_factory=list)
    first_rate: list[float] = field(default_factory=list)  # each stage's rate when it began

    @property
    def done(self) -> bool:
        return self.index >= len(self.stages)

    @property
    def end(self) -> float:
        return self.ends[-1] if self.ends else self.start


@dataclass
class Usage:
    """Per resource: units carried and capacity offered (∫C dt) so far, for utilisation."""

    carried: float = 0.0
    offered: float = 0.0


class FluidNetwork:
    """Args:
    resources: {name: capacity process}.
    """

    def __init__(self, resources: dict[str, CapacityProcess]) -> None:
        self.resources = dict(resources)
        self.now = 0.0
        self.jobs: dict[int, Job] = {}
        self.finished: list[Job] = []
        self.usage = {r: Usage() for r in self.resources}
        self._next_id = 0

    # -- input ------------------------------------------------------------------
    def submit(self, client: int, start: float, stages: list[Stage] | tuple[Stage, ...], tag: object = None) -> Job:
        """A job that begins at ``start`` (>= now: the past is settled)."""
        if start < self.now - 1e-9:
            raise ValueError(f"job of client {client} starts at {start:.9f} s, before the settled time {self.now:.9f} s")
        for s in stages:
            for r in s.resources:
                if r not in self.resources:
                    raise KeyError(f"unknown resource {r!r}")
        job = Job(self._next_id, client, max(start, self.now), tuple(stages), tag)
        self._next_id += 1
        self.jobs[job.id] = job
        if job.start <= self.now:
            self._begin(job, 0)
        return job

    def cancel(self, client: int) -> None:
        """Drop every job of ``client`` (a failed client)."""
        for j in [j for j in self.jobs.values() if j.client == client]:
            del self.jobs[j.id]

    # -- the simulation -----------------------------------------------------------
    def _begin(self, job: Job, index: int) -> None:
        """Start stage ``index`` of ``job`` at ``now`` (skipping empty stages)."""
        while index < len(job.stages):
            s = job.stages[index]
            job.index = index
            if s.kind == "wait":
                job.moving, job.until = False, self.now + s.size
                job.first_rate.append(math.nan)
                if s.size > 0:
                    return
            elif s.size > 0:
                job.moving, job.remaining = True, s.size
                job.first_rate.append(math.nan)  # filled at the next allocation
                return
            else:  # an empty flow: only its delay
                job.first_rate.append(math.nan)
                job.moving, job.until = False, self.now + s.then
                if s.then > 0:
                    return
            job.ends.append(self.now)
            index += 1
        job.index = len(job.stages)
        del self.jobs[job.id]
        self.finished.append(job)

    def _after_flow(self, job: Job) -> None:
        s = job.stages[job.index]
        job.moving, job.remaining = False, 0.0
        job.until = self.now + s.then
        if s.then <= 0:
            self._next_stage(job)

    def _next_stage(self, job: Job) -> None:
        job.ends.append(self.now)
        self._begin(job, job.index + 1)

    def allocate(self) -> dict[int, float]:
        """Max-min fair rates of the moving flows at ``now`` (progressive filling)."""
        flows = [j for j in self.jobs.values() if j.index >= 0 and not j.done and j.moving]
        rates = {j.id: 0.0 for j in flows}
        if not flows:
            return rates
        left = {}
        for j in flows:
            for r in j.stages[j.index].resources:
                if r not in left:
                    left[r] = max(float(self.resources[r].rate_at(self.now)), 0.0)
        active = {j.id: j for j in flows}
        while active:
            count: dict[str, int] = {}
            for j in active.values():
                for r in j.stages[j.index].resources:
                    count[r] = count.get(r, 0) + 1
            inc = min([left[r] / n for r, n in count.items()] +
                      [j.stages[j.index].cap - rates[j.id] for j in active.values()])
            inc = max(inc, 0.0)
            for r, n in count.items():
                left[r] -= inc * n
            for jid in active:
                rates[jid] += inc
            full = {r for r, n in count.items() if left[r] <= EPS * max(1.0, inc * n)}
            active = {jid: j for jid, j in active.items()
                      if not (set(j.stages[j.index].resources) & full)
                      and rates[jid] < j.stages[j.index].cap * (1 - 1e-12)}
            if inc == 0.0:  # nothing can rise any more (a resource at capacity 0)
                break
        for j in flows:
            j.rate = rates[j.id]
            if math.isnan(j.first_rate[j.index]):
                j.first_rate[j.index] = j.rate
        return rates

    def next_event(self) -> float:
        """The time of the next event given the current rates (inf: nothing to do)."""
        t = math.inf
        used: set[str] = set()
        for j in self.jobs.values():
            if j.index < 0:
                t = min(t, j.start)
            elif j.moving:
                used.update(j.stages[j.index].resources)
                if j.rate > 0:
                    t = min(t, self.now + j.remaining / j.rate)
            else:
                t = min(t, j.until)
        for r in used:
            t = min(t, self.resources[r].next_change(self.now))
        return t

    def advance(self, until: float, *, stop_at_finish: bool = False) -> list[Job]:
        """Settle every event up to ``until`` (inf: until nothing is left) and move the
        flows to it; returns the jobs that finished, in order of their end. With
        ``stop_at_finish`` it stops at the first time a job finishes (its client may act
        again from then on, so what is safe to settle may have changed)."""
        while True:
            rates = self.allocate()
            t = self.next_event()
            if t > until or math.isinf(t):  # (inf: idle, or every flow stalled on a dead resource)
                if math.isfinite(until) and until > self.now:
                    self._move(until - self.now, rates)
                    self.now = until
                break
            dt = max(t - self.now, 0.0)
            self._move(dt, rates)
            self.now = max(self.now, t)
            self._settle(t, rates)
            if stop_at_finish and self.finished:
                break
        out, self.finished = self.finished, []
        out.sort(key=lambda j: (j.end, j.id))
        return out

    def _move(self, dt: float, rates: dict[int, float]) -> None:
        if dt <= 0:
            return
        offered: dict[str, float] = {}
        for j in self.jobs.values():
            if j.id in rates and j.moving:
                moved = rates[j.id] * dt
                j.remaining -= moved
                for r in j.stages[j.index].resources:
                    self.usage[r].carried += moved
                    offered[r] = 1.0
        for r in offered:  # capacity offered counts while a resource is in use
            self.usage[r].offered += self.resources[r].rate_at(self.now) * dt

    def _settle(self, t: float, rates: dict[int, float]) -> None:
        for j in sorted(self.jobs.values(), key=lambda j: j.id):
            if j.id not in self.jobs:
                continue
            if j.index < 0:
                if j.start <= t:
                    self._begin(j, 0)
            elif j.moving:
                size = j.stages[j.index].size
                if j.remaining <= 1e-9 * max(size, 1.0) or (
                        rates.get(j.id, 0) > 0 and j.remaining / rates[j.id] <= 1e-12 * max(t, 1.0)):
                    self._after_flow(j)
            elif j.until <= t:
                self._next_stage(j)

    def busy(self) -> bool:
        return bool(self.jobs)

    def utilization(self, resource: str) -> float:
        """Units carried / capacity offered while in use, since the start (nan if unused)."""
        u = self.usage[resource]
        return u.carried / u.offered if u.offered > 0 else math.nan
