"""Closed-loop budgets: each client's B follows its link, against a step-time target.

After every ``adapt_every`` steps a client reports what its steps cost on the emulated
network (``Observation``: emulated seconds, link seconds each way, the propagation part,
wire bytes). The policy keeps, per client, smoothed estimates (EWMA, weight
``smoothing`` on the newest) of

* the seconds per step spent off the link (compute, server, waiting): ``other``,
* the fixed link cost per step (propagation, retransmission feedback): ``latency``,
* the seconds per wire byte while transferring (1 / effective throughput, sharing
  with the other clients included): ``per_byte``,

and predicts the step time at budget B' from the bytes a step sent at budget B (message
size is nearly proportional to B: values and indices per channel, a small header):

    T(B') = other + latency + per_byte · wire_per_step · B' / B

It then gives the client the largest candidate budget with T(B') <= target (the
smallest if none fits). The target is ``target_step_s``, or with ``deadline_s`` the
client's emulated time left over its steps left, so a client that fell behind sends less
and one ahead sends more. More channels carry more information per step, so the policy
spends whatever the link allows on accuracy and no more.

Progression is another policy's (``adaptive_base``): async (each client at its own pace,
the default) or sync (barriers, so heads can be averaged); this one only sets budgets.
The plan's phases still give the stages (objectives, filter resets), not the budgets.

With participant selection (``raysplit.budget.selection``, sync base only: rounds need
common epochs) only a round's participants train, so only their observations reach the
loop; a client that sits out keeps its budget and estimates until it is drawn again. Its
steps left (for ``deadline_s``) count only the rounds it is drawn for.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from raysplit.budget.policies.asynchronous import AsyncPolicy
from raysplit.budget.policies.base import EVALUATE, TRAIN, Directive, Event, Observation, Transition, Wait
from raysplit.budget.policies.sync import SyncPolicy
from raysplit.training.methods import Plan

BASES = ("async", "sync")


@dataclass(frozen=True)
class AdaptiveConfig:
    """The adaptive budget policy (--policy adaptive).

    Args:
        target_step_s: keep each client's emulated step time under this many seconds (0: use
            deadline_s).
        deadline_s: finish training within this many emulated seconds: a client's target step time is
            its time left over its steps left (0: use target_step_s).
        adaptive_budgets: the budgets B to choose from (default: the schedule's budgets and the powers
            of two between 4 and its largest).
        adapt_every: steps between two decisions for a client.
        adaptive_base: how clients move through the epochs: async (each at its own pace) or sync (all
            together; needed for --mode splitfed).
        smoothing: weight of the newest observation in the estimates (1 = only the last segment).
    """

    target_step_s: float = 0.0
    deadline_s: float = 0.0
    adaptive_budgets: tuple[int, ...] = ()
    adapt_every: int = 8
    adaptive_base: str = "async"  # checked below (importing the CLI's option() here would be circular)
    smoothing: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "adaptive_budgets", tuple(int(b) for b in self.adaptive_budgets))
        if self.target_step_s < 0 or self.deadline_s < 0:
            raise ValueError(f"target_step_s and deadline_s must be >= 0, got {self.target_step_s}, {self.deadline_s}")
        if self.target_step_s and self.deadline_s:
            raise ValueError("give target_step_s or deadline_s, not both")
        if any(b < 1 for b in self.adaptive_budgets):
            raise ValueError(f"adaptive_budgets must be >= 1, got {list(self.adaptive_budgets)}")
        if self.adapt_every < 1:
            raise ValueError(f"adapt_every must be >= 1 step, got {self.adapt_every}")
        if self.adaptive_base not in BASES:
            raise ValueError(f"unknown adaptive_base {self.adaptive_base!r}; choose one of {', '.join(BASES)}")
        if not 0 < self.smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {self.smoothing}")


def candidate_budgets(plan: Plan, given: tuple[int, ...] = ()) -> tuple[int, ...]:
    """The budgets to choose from: ``given``, else the plan's and the powers of two
    between 4 and its largest."""
    if given:
        return tuple(sorted(set(given)))
    budgets = [p.budget for p in plan.phases]
    hi = max(budgets)
    lo = min(4, hi)
    pows = {1 << k for k in range(0, hi.bit_length() + 1) if lo <= (1 << k) <= hi}
    return tuple(sorted(pows | set(budgets)))


@dataclass
class _Estimate:
    other: float = math.nan
    latency: float = math.nan
    per_byte: float = math.nan
    bytes_per_budget: float = math.nan  # wire bytes per step per channel

    def update(self, a: float, other: float, latency: float, per_byte: float, bytes_per_budget: float) -> None:
        for name, v in (("other", other), ("latency", latency), ("per_byte", per_byte),
                        ("bytes_per_budget", bytes_per_budget)):
            if not math.isfinite(v):
                continue
            old = getattr(self, name)
            setattr(self, name, v if math.isnan(old) else (1 - a) * old + a * v)

    def step_time(self, budget: int) -> float:
        return self.other + self.latency + self.per_byte * self.bytes_per_budget * budget


class AdaptivePolicy:
    """Args:
    plan, steps_per_epoch, segment_steps, aggregate: as every policy (segment_steps is
        replaced by config.adapt_every).
    config: the targets and candidates.
    """

    def __init__(self, plan: Plan, steps_per_epoch: dict[int, int], segment_steps: int = 0, aggregate: bool = False,
                 config: AdaptiveConfig | None = None, selection=None) -> None:
        cfg = config or AdaptiveConfig()
        if selection is not None and cfg.adaptive_base != "sync":
            raise ValueError(f"participant selection draws clients per round (epoch): policy 'adaptive' needs "
                             f"--adaptive-base sync for it, got adaptive_base {cfg.adaptive_base!r} (no common epochs)")
        if not plan.compression:
            raise ValueError(f"policy 'adaptive' chooses budgets for the compression module; method {plan.method!r} "
                             "has none (use fixed, deprune or prune)")
        if not (cfg.target_step_s or cfg.deadline_s):
            raise ValueError("policy 'adaptive' needs a target: --target-step-s SECONDS or --deadline-s SECONDS")
        self.cfg, self.plan = cfg, plan
        base = SyncPolicy if cfg.adaptive_base == "sync" else AsyncPolicy
        self.inner = (base(plan, dict(steps_per_epoch), cfg.adapt_every, aggregate) if selection is None
                      else SyncPolicy(plan, dict(steps_per_epoch), cfg.adapt_every, aggregate, selection=selection))
        self.candidates = candidate_budgets(plan, cfg.adaptive_budgets)
        first = plan.phases[0].budget
        start = min(self.candidates, key=lambda b: (abs(b - first), b))
        self.budget = {c: start for c in steps_per_epoch}
        # the steps each client will train: in every epoch, or only in the rounds it is drawn for
        rounds = {c: plan.total_epochs for c in steps_per_epoch} if selection is None else {c: 0 for c in steps_per_epoch}
        if selection is not None:
            for e in range(plan.total_epochs):
                for c in selection.participants(e, steps_per_epoch):
                    rounds[c] += 1
        self.total_steps = {c: n * rounds[c] for c, n in steps_per_epoch.items()}
        self.done_steps = {c: 0 for c in steps_per_epoch}
        self.est = {c: _Estimate() for c in steps_per_epoch}

    # -- questions ------------------------------------------------------------------
    def decide(self, client: int) -> Directive | Wait:
        d = self.inner.decide(client)
        if isinstance(d, Directive) and d.kind in (TRAIN, EVALUATE):
            return dataclasses.replace(d, budget=self.budget[client])
        return d

    def progress(self) -> dict[int, int]:
        return self.inner.progress()

    def target(self, client: int, now: float) -> float:
        if self.cfg.target_step_s:
            return self.cfg.target_step_s
        left = self.total_steps[client] - self.done_steps[client]
        return (self.cfg.deadline_s - now) / left if left > 0 else math.inf

    # -- news -----------------------------------------------------------------------
    def observe(self, obs: Observation) -> list[Event]:
        events = list(self.inner.observe(obs))
        if obs.kind != TRAIN or obs.steps <= 0:
            return events
        c = obs.client
        self.done_steps[c] += obs.steps
        if not math.isfinite(obs.sim_time):
            return events  # no emulated link: nothing to adapt to
        n, b = obs.steps, self.budget[c]
        link = obs.uplink_s + obs.downlink_s
        wire = obs.wire_bytes_up + obs.wire_bytes_down
        per_byte = (link - obs.latency_s) / wire if wire > 0 else math.nan
        self.est[c].update(self.cfg.smoothing, max(obs.sim_seconds - link, 0.0) / n, obs.latency_s / n,
                           max(per_byte, 0.0), wire / n / b)
        new = self.choose(c, self.target(c, obs.sim_time))
        if new != b:
            self.budget[c] = new
            epoch = min(obs.epoch, self.plan.total_epochs - 1)
            events.append(Transition(obs.epoch, b, new, self.plan.lr_at(epoch), c))
        return events

    def choose(self, client: int, target: float) -> int:
        """The largest candidate whose predicted step time fits ``target``."""
        e = self.est[client]
        fits = [b for b in self.candidates if e.step_time(b) <= target]
        return max(fits) if fits else min(self.candidates)

    def drop(self, client: int) -> list[Event]:
        return self.inner.drop(client)

    # -- state ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"inner": self.inner.state_dict(), "budget": dict(self.budget), "done_steps": dict(self.done_steps),
                "est": {c: dataclasses.asdict(e) for c, e in self.est.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state["inner"])
        self.budget = {int(c): int(b) for c, b in state["budget"].items()}
        self.done_steps = {int(c): int(s) for c, s in state["done_steps"].items()}
        self.est = {int(c): _Estimate(**e) for c, e in state["est"].items()}
