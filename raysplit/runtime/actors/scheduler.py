"""Scheduler actor: the coordinator (``runtime/coordinator.py``) behind one async actor.

Clients call ``next`` with their report and wait in it while their policy says WAIT;
every report wakes the waiters. The actions a report causes (replica syncs, averaging,
model and checkpoint saves) are performed before anyone moves on: while one is being
performed, every ``next`` waits.
"""

from __future__ import annotations

import asyncio
import logging

import ray

from raysplit.budget.policies import WAIT, Directive, make_policy
from raysplit.identity import Identity
from raysplit.observability.metrics import Recorder
from raysplit.records.writer import CheckpointSnapshot, ModelSnapshot
from raysplit.runtime.coordinator import (
    AlignClocks,
    Coordinator,
    Record,
    SaveCheckpoint,
    SaveModel,
    ShareAverage,
    SyncShards,
)
from raysplit.training.aggregate import weighted_average
from raysplit.training.loop import Report
from raysplit.training.methods import Plan

log = logging.getLogger("raysplit.scheduler")


class Scheduler:
    """Args:
    policy: the policy's name (``raysplit.budget.policies.POLICIES``).
    plan: the run's plan.
    steps_per_epoch: {client: batches per epoch}.
    weights: {client: training samples} (head averaging).
    identity: the run's identity (metric tags).
    shards: the shard actors.
    shard_sync: "average" (through this actor) or "allreduce" (inside the shards).
    buffer: the record buffer actor (events and snapshots for the run directory).
    segment_steps, aggregate, checkpoint_every: see ``make_policy`` and ``Coordinator``.
    clocks: the emulated network's medium actor (None without a link): told when a client
        waits at a barrier, when a barrier passes, and when a client is dropped, so that
        simulated time only moves on when no client can still act before it.
    policy_options: {policy name: keyword arguments} for ``make_policy``.
    """

    def __init__(self, policy: str, plan: Plan, steps_per_epoch: dict[int, int], weights: dict[int, float],
                 identity: Identity, shards: list, shard_sync: str, buffer, *, segment_steps: int = 0,
                 aggregate: bool = False, checkpoint_every: int = 0, clocks=None,
                 policy_options: dict | None = None) -> None:
        p = make_policy(policy, plan, steps_per_epoch, segment_steps=segment_steps, aggregate=aggregate,
                        options=policy_options)
        self.clocks = clocks
        self.core = Coordinator(p, plan, weights, shards=len(shards), checkpoint_every=checkpoint_every)
        self.identity = identity
        self.shards, self.shard_sync, self.buffer = shards, shard_sync, buffer
        self.metrics = Recorder()
        self.cond = asyncio.Condition()
        self.busy = 0
        first = plan.phases[0].budget
        for c in steps_per_epoch:
            self.metrics.budget(str(c), first, tenant=identity.tenant)

    async def next(self, client: int, report: Report | None) -> Directive:
        await self._perform(self.core.report(client, report))
        held = False
        async with self.cond:
            while True:
                if self.busy:
                    d = WAIT
                else:
                    d = self.core.decide(client)
                    if d is WAIT and not held and self.clocks is not None:  # at a barrier of the policy
                        held = True
                        await self.clocks.hold.remote(client)
                if d is not WAIT:
                    return d
                await self.cond.wait()

    async def drop(self, client: int, error: str) -> None:
        if self.clocks is not None:
            await self.clocks.retire.remote(client)
        await self._perform(self.core.drop(client, error))

    async def finish(self) -> dict:
        """After every client is done: make the replicas equal one last time (the async
        policy has no barrier that would have), and say what happened."""
        if len(self.shards) > 1:
            await self._sync_shards()
        return {"transitions": [t.__dict__ for t in self.core.transitions], "failed": dict(self.core.failed)}

    async def state_dict(self) -> dict:
        return self.core.state_dict()

    # -- actions ------------------------------------------------------------------
    async def _perform(self, actions: list) -> None:
        if not actions:
            async with self.cond:
                self.cond.notify_all()
            return
        self.busy += 1
        try:
            for a in actions:
                await self._do(a)
        finally:
            self.busy -= 1
            async with self.cond:
                self.cond.notify_all()

    async def _do(self, a) -> None:
        if isinstance(a, SyncShards):
            await self._sync_shards()
        elif isinstance(a, ShareAverage):
            # One copy in the object store, read by every client (not one per reply).
            self.core.averaged[a.epoch] = ray.put(self.core.averaged[a.epoch])
        elif isinstance(a, SaveModel):
            server = await self.shards[0].modules_state.remote()
            self.buffer.put.remote([ModelSnapshot(a.phase, a.budget, a.epoch, a.heads, server)])
        elif isinstance(a, SaveCheckpoint):
            shards = await asyncio.gather(*[s.state_dict.remote() for s in self.shards])
            snap = CheckpointSnapshot(a.epoch, a.clients, list(shards), self.core.state_dict())
            self.buffer.put.remote([snap])
        elif isinstance(a, AlignClocks):
            if self.clocks is not None:
                await self.clocks.release.remote(list(a.clients), a.time)
        elif isinstance(a, Record):
            for item in a.items:
                if hasattr(item, "to_budget"):
                    self.metrics.transition(tenant=self.identity.tenant)
                    targets = sorted(self.core.live) if item.client is None else [item.client]
                    for c in targets:
                        self.metrics.budget(str(c), item.to_budget, tenant=self.identity.tenant)
                    who = "all clients" if item.client is None else f"client {item.client}"
                    print(f"[raysplit.scheduler] budget transition at epoch {item.epoch}: {item.from_budget} -> "
                          f"{item.to_budget} (lr {item.lr:g}) for {who}", flush=True)
            self.buffer.put.remote(list(a.items))
        else:  # pragma: no cover - every action type is handled above
            raise TypeError(f"unknown action {a!r}")

    async def _sync_shards(self) -> None:
        if self.shard_sync == "allreduce":
            await asyncio.gather(*[s.allreduce.remote() for s in self.shards])
            return
        states = await asyncio.gather(*[s.modules_state.remote() for s in self.shards])
        avg = ray.put(weighted_average(list(states), [1.0] * len(states)))
        await asyncio.gather(*[s.load_modules_state.remote(avg) for s in self.shards])


SchedulerActor = ray.remote(Scheduler)
