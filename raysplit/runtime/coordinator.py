"""The scheduler's logic, without Ray: a policy plus what happens around it.

:class:`Coordinator` holds the budget policy and the states clients hand in. Each
client report goes to the policy; what that causes comes back as :class:`Action` objects
for the shell to perform (the scheduler actor awaits shard calls, the local trainer calls
its one server directly):

* ``SyncShards``: a training barrier completed and there are replicas to make equal;
* ``ShareAverage``: every live client handed in its head: the sample-weighted average
  (pure numpy) is ready to be loaded before the evaluation (SplitFed);
* ``SaveModel`` / ``SaveCheckpoint``: every live client handed in the state a save asked
  for: fetch the server side and write;
* ``Record``: events (transitions, barriers, failures) for the run directory;
* ``AlignClocks``: a barrier passed with emulated clocks: its clients resume at the
  latest of them (the emulated network's medium is told, and their next directives say).
* ``SnapshotShards``: every live client evaluated an epoch (with ``snapshot_shards``):
  the shards' recovery snapshots can be taken.

A report is counted once: each carries the sequence number of the directive it answers,
and one already answered (a scheduler that restarted sees it again) is ignored.

The coordinator also decorates the policy's directives: sequence numbers, what an
evaluation must collect (a model at a phase end with ``save_on_exit``, a checkpoint every
``checkpoint_every`` epochs) and the averaged state to load.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from raysplit.budget.policies import (
    AGGREGATE,
    DONE,
    EVALUATE,
    TRAIN,
    WAIT,
    Barrier,
    BudgetPolicy,
    Directive,
    Event,
    Round,
    Transition,
    Wait,
)
from raysplit.training.aggregate import weighted_average
from raysplit.training.loop import Report, resolve_state
from raysplit.training.methods import Plan

log = logging.getLogger("raysplit.scheduler")


@dataclass(frozen=True)
class SyncShards:
    """Make the tail replicas equal."""


@dataclass(frozen=True)
class ShareAverage:
    epoch: int


@dataclass(frozen=True)
class SaveModel:
    phase: int
    budget: int
    epoch: int
    heads: dict


@dataclass(frozen=True)
class SaveCheckpoint:
    epoch: int
    clients: dict


@dataclass(frozen=True)
class Record:
    items: tuple


@dataclass(frozen=True)
class AlignClocks:
    """The clients of a barrier resume at emulated time ``time``."""

    clients: tuple[int, ...]
    time: float


@dataclass(frozen=True)
class ClientFailed:
    """A client was dropped (an event for the run directory and callbacks)."""

    client: int
    error: str


@dataclass(frozen=True)
class SnapshotShards:
    """Every live client evaluated ``epoch``: snapshot the shards for recovery."""

    epoch: int


Action = SyncShards | ShareAverage | SaveModel | SaveCheckpoint | Record | AlignClocks | SnapshotShards


class Coordinator:
    """Args:
    policy: the budget policy (``raysplit.budget.policies``).
    plan: the run's plan.
    weights: {client: training samples}, the weights of head averaging.
    shards: number of tail replicas (syncs are only asked for with more than one).
    checkpoint_every: collect a checkpoint every this many epochs (0 = never).
    snapshot_shards: ask for the shards' recovery snapshots after every epoch.
    """

    def __init__(self, policy: BudgetPolicy, plan: Plan, weights: dict[int, float], *, shards: int = 1,
                 checkpoint_every: int = 0, snapshot_shards: bool = False) -> None:
        self.policy, self.plan = policy, plan
        self.weights = dict(weights)
        self.shards = shards
        self.checkpoint_every = checkpoint_every
        self.snapshot_shards = snapshot_shards
        self.answered: dict[int, int] = {}            # client -> seq of the last report counted
        self.evaluated: dict[int, set[int]] = {}      # epoch -> clients that evaluated it (snapshots)
        self.live = set(weights)
        self.failed: dict[int, str] = {}
        self.seq = {c: 0 for c in weights}
        self.heads: dict[int, dict[int, Any]] = {}       # epoch -> client -> head (averaging)
        self.averaged: dict[int, Any] = {}                # epoch -> averaged head (or a reference to it)
        self.model_heads: dict[int, dict[int, Any]] = {}  # epoch -> client -> head (saving)
        self.ckpt: dict[int, dict[int, Any]] = {}         # epoch -> client -> full state
        self.transitions: list[Transition] = []
        self.clock: dict[int, float] = {}   # client -> emulated clock at its last report
        self.resume: dict[int, float] = {}  # client -> emulated time of the last barrier it passed
        self.synced: dict[int, int] = {}                  # client -> epoch of the last average it loaded
        # Bumped whenever what a waiting client waits for may have changed: the policy
        # answered a report or a drop with events (a barrier passed, a round began, a
        # transition), or a client was dropped. A report that moved nothing leaves it, so
        # the shell wakes its waiters only on a change, not on every report (at 1,024
        # waiting clients, waking all of them per report costs N decisions per report).
        self.moves = 0

    # -- a client reports -------------------------------------------------------
    def report(self, client: int, report: Report | None) -> list[Action]:
        if report is None:
            return []
        obs = report.obs
        if obs.client != client:
            raise ValueError(f"client {client} sent a report of client {obs.client}")
        if report.seq:
            if report.seq <= self.answered.get(client, 0):
                log.info("client %s: report of directive %s seen before, ignored", client, report.seq)
                return []
            self.answered[client] = report.seq
        if obs.sim_time == obs.sim_time:  # not NaN: the run emulates a network
            self.clock[client] = obs.sim_time
        state = report.state or {}
        if obs.kind == AGGREGATE:
            self.heads.setdefault(obs.epoch, {})[client] = state["modules"]
        elif obs.kind == EVALUATE:
            if "modules" in state:
                self.model_heads.setdefault(obs.epoch, {})[client] = state["modules"]
            if "checkpoint" in state:
                self.ckpt.setdefault(obs.epoch, {})[client] = state["checkpoint"]
            if self.snapshot_shards:
                self.evaluated.setdefault(obs.epoch, set()).add(client)
        return self._handle(self.policy.observe(obs))

    def drop(self, client: int, error: str) -> list[Action]:
        """A client failed: it holds no barrier and no collection any more."""
        if client not in self.live:
            return []
        self.live.discard(client)
        self.failed[client] = error
        self.moves += 1
        log.warning("client %s dropped from the schedule: %s", client, error)
        return [Record((ClientFailed(client, error),)), *self._handle(self.policy.drop(client))]

    def _handle(self, events: list[Event]) -> list[Action]:
        actions: list[Action] = []
        self.moves += bool(events)
        for ev in events:
            if isinstance(ev, Barrier) and any(c in self.clock for c in ev.clients):
                t = max(self.clock.get(c, 0.0) for c in ev.clients)  # they all waited for the last
                self.resume.update(dict.fromkeys(ev.clients, t))
                actions.append(AlignClocks(tuple(ev.clients), t))
            if isinstance(ev, Round):
                actions.append(Record((ev,)))
            elif isinstance(ev, Transition):
                self.transitions.append(ev)
                who = "all clients" if ev.client is None else f"client {ev.client}"
                log.info("budget transition at epoch %s: %s -> %s (lr %g) for %s",
                         ev.epoch, ev.from_budget, ev.to_budget, ev.lr, who)
                actions.append(Record((ev,)))
            elif isinstance(ev, Barrier) and ev.kind == TRAIN and self.shards > 1:
                actions.append(SyncShards())
            elif isinstance(ev, Barrier) and ev.kind == AGGREGATE:
                heads = self.heads.pop(ev.epoch, {})
                ids = sorted(c for c in heads if c in self.live)
                if ids:
                    self.averaged = {ev.epoch: weighted_average([resolve_state(heads[c]) for c in ids],
                                                                [self.weights[c] for c in ids])}
                    actions.append(ShareAverage(ev.epoch))
        actions += self._completed_collections()
        return actions

    def _completed_collections(self) -> list[Action]:
        out: list[Action] = []
        for epoch in sorted(self.model_heads):
            heads = self.model_heads[epoch]
            if self.live and self.live <= set(heads):
                del self.model_heads[epoch]
                phase = self.plan.phase_at(epoch)
                out.append(SaveModel(phase.index, phase.budget, epoch, {c: heads[c] for c in sorted(self.live)}))
        for epoch in sorted(self.ckpt):
            states = self.ckpt[epoch]
            if self.live and self.live <= set(states):
                del self.ckpt[epoch]
                out.append(SaveCheckpoint(epoch, {c: states[c] for c in sorted(self.live)}))
        for epoch in sorted(self.evaluated):
            if self.live and self.live <= self.evaluated[epoch]:
                del self.evaluated[epoch]
                out.append(SnapshotShards(epoch))
        return out

    # -- what a client does next --------------------------------------------------
    def decide(self, client: int) -> Directive | Wait:
        if client not in self.live:
            return Directive(DONE)
        d = self.policy.decide(client)
        if d is WAIT or d.kind == DONE:
            return d
        self.seq[client] += 1
        extra: dict[str, Any] = {"seq": self.seq[client], "resume_at": self.resume.get(client)}
        if d.kind == EVALUATE:
            phase = self.plan.phase_at(d.epoch)
            collect = []
            if phase.save_on_exit and d.epoch == phase.last_epoch:
                collect.append("model")
            if self.checkpoint_every and (d.epoch + 1) % self.checkpoint_every == 0:
                collect.append("checkpoint")
            extra["collect"] = tuple(collect)
            extra["load_state"] = self.averaged.get(d.epoch)
            if extra["load_state"] is not None:
                self.synced[client] = d.epoch
        elif d.kind == TRAIN and self.averaged:
            # A client that sat out the rounds since the last average (participant
            # selection) starts from that average, not from its own stale head.
            latest = max(self.averaged)
            if self.synced.get(client, -1) < latest:
                extra["load_state"] = self.averaged[latest]
                self.synced[client] = latest
        return dataclasses.replace(d, **extra)

    # -- state --------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict(), "seq": dict(self.seq), "live": sorted(self.live),
                "failed": dict(self.failed), "transitions": [t.__dict__ for t in self.transitions],
                "clock": dict(self.clock), "resume": dict(self.resume), "answered": dict(self.answered),
                "synced": dict(self.synced)}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.seq = {int(c): int(s) for c, s in state["seq"].items()}
        self.live = set(state["live"])
        self.failed = {int(c): e for c, e in state["failed"].items()}
        self.transitions = [Transition(**t) for t in state["transitions"]]
        self.clock = {int(c): float(t) for c, t in state.get("clock", {}).items()}
        self.resume = {int(c): float(t) for c, t in state.get("resume", {}).items()}
        self.answered = {int(c): int(s) for c, s in state.get("answered", {}).items()}
        self.synced = {int(c): int(e) for c, e in state.get("synced", {}).items()}
