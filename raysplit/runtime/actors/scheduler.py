"""Scheduler actor: the coordinator (``runtime/coordinator.py``) behind one async actor.

Clients call ``next`` with their report and wait in it while their policy says WAIT;
the waiters are woken when what they wait for changes (the coordinator's ``moves``: a
barrier passed, a round began, a transition, a drop) or when pending actions are done, not
on every report: a report that moved nothing wakes nobody. The actions a report causes (replica syncs, averaging,
model and checkpoint saves) are performed before anyone moves on: while one is being
performed, every ``next`` waits.

With a state store, the scheduler journals its state there before it answers anyone
(``runtime/recovery.py``; the calls that arrive while a write is in flight share the next
write, ``runtime/group_commit.py``): a restarted scheduler reloads the budget, every client's
progress and the actions in progress, and Ray retries the clients' calls against it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

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
    SnapshotShards,
    SyncShards,
)
from raysplit.runtime.recovery import Restarted, SchedulerJournal, _announce, held_refs
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
    segment_steps, aggregate, checkpoint_every, selection: see ``make_policy`` and ``Coordinator``.
    clocks: the emulated network's medium actor (None without a link): told when a client
        waits at a barrier, when a barrier passes, and when a client is dropped, so that
        simulated time only moves on when no client can still act before it.
    policy_options: {policy name: keyword arguments} for ``make_policy``.
    """

    def __init__(self, policy: str, plan: Plan, steps_per_epoch: dict[int, int], weights: dict[int, float],
                 identity: Identity, shards: list, shard_sync: str, buffer, *, segment_steps: int = 0,
                 aggregate: bool = False, checkpoint_every: int = 0, clocks=None,
                 policy_options: dict | None = None, store=None, selection=None) -> None:
        t0 = time.perf_counter()
        p = make_policy(policy, plan, steps_per_epoch, segment_steps=segment_steps, aggregate=aggregate,
                        options=policy_options, selection=selection)
        self.clocks = clocks
        self.core = Coordinator(p, plan, weights, shards=len(shards), checkpoint_every=checkpoint_every,
                                snapshot_shards=store is not None)
        self.identity = identity
        self.shards, self.shard_sync, self.buffer = shards, shard_sync, buffer
        self.store = store
        self.journal = None if store is None else SchedulerJournal(store, self.core)
        self.metrics = Recorder()
        self.cond = asyncio.Condition()
        self.busy = 0
        self.redo: list = []  # actions a restarted scheduler performs again
        first = plan.phases[0].budget
        for c in steps_per_epoch:
            self.metrics.budget(str(c), first, tenant=identity.tenant)
        if self.journal is not None and ray.get_runtime_context().was_current_actor_reconstructed:
            pending = self.journal.load()
            self.redo = list(pending or [])
            progress = self.core.policy.progress()
            detail = ("its journal: epochs done " + ", ".join(f"{c}: {e}" for c, e in progress.items())
                      + f", {len(self.redo)} actions to perform again") if pending is not None else "nothing journalled"
            _announce(buffer, Restarted("scheduler", 0, time.perf_counter() - t0, detail))

    async def next(self, client: int, report: Report | None) -> Directive:
        if self.redo:
            redo, self.redo = self.redo, []
            await self._perform(redo)
        moves = self.core.moves
        actions = self.core.report(client, report)
        await self._perform(actions, wake=self.core.moves != moves)
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
        moves = self.core.moves
        actions = self.core.drop(client, error)
        await self._perform(actions, wake=self.core.moves != moves)

    async def finish(self) -> dict:
        """After every client is done: make the replicas equal one last time (the async
        policy has no barrier that would have), and say what happened."""
        if len(self.shards) > 1:
            await self._sync_shards()
        out = {"transitions": [t.__dict__ for t in self.core.transitions], "failed": dict(self.core.failed)}
        if self.journal is not None:
            j = out["journal"] = self.journal.stats
            print(f"[raysplit.scheduler] journal: {j['requests']} save requests, {j['saves']} store puts, "
                  f"{j['snapshot_s']:.2f} s taking snapshots, {j['wait_s']:.2f} s waited (summed over callers), "
                  f"{j['write_s']:.2f} s writing", flush=True)
        return out

    async def state_dict(self) -> dict:
        return self.core.state_dict()

    async def pid(self) -> int:
        return os.getpid()

    async def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint's scheduler state (``--resume``)."""
        self.core.load_state_dict(state)
        if self.journal is not None:
            await self.journal.save()

    # -- actions ------------------------------------------------------------------
    async def _perform(self, actions: list, wake: bool = False) -> None:
        # Nobody may be handed a directive while the actions of a report are pending: mark
        # busy before the first await. ``wake``: the report changed what waiters wait for;
        # after actions, everyone is woken (who waited only because they were pending too).
        self.busy += bool(actions)
        ids = [] if self.journal is None else self.journal.add(actions)
        if self.journal is not None:  # write-ahead: the state, and what is still to be done
            await self.journal.save()
        if not actions:
            if wake:
                async with self.cond:
                    self.cond.notify_all()
            return
        try:
            for a in actions:
                await self._do(a)
        finally:
            self.busy -= 1
            if self.journal is not None:
                self.journal.done(ids)
                await self.journal.save()
            async with self.cond:
                self.cond.notify_all()

    async def _do(self, a) -> None:
        if isinstance(a, SyncShards):
            await self._sync_shards()
        elif isinstance(a, ShareAverage):
            # One copy in the object store, read by every client (not one per reply);
            # held by the state store when there is one, so it outlives this actor.
            avg = self.core.averaged.get(a.epoch)
            if avg is not None and not isinstance(avg, ray.ObjectRef):
                self.core.averaged[a.epoch] = (ray.put(avg) if self.store is None
                                               else (await self.store.hold.remote(avg))[0])
        elif isinstance(a, SaveModel):
            server = await self.shards[0].modules_state.remote()
            heads = {c: await _fetch(h) for c, h in a.heads.items()}
            self.buffer.put.remote([ModelSnapshot(a.phase, a.budget, a.epoch, heads, server)])
            await self._release(a.heads)
        elif isinstance(a, SaveCheckpoint):
            shards = await asyncio.gather(*[s.state_dict.remote() for s in self.shards])
            clients = {c: await _fetch(st) for c, st in a.clients.items()}
            # The shards hold each client's latest recovery state and the steps logged since:
            # together with the shards' own state, a consistent cut, whatever the policy.
            for st in shards:
                clients.update(st.pop("recovery", {}))
            snap = CheckpointSnapshot(a.epoch, clients, list(shards), self.core.state_dict())
            self.buffer.put.remote([snap])
            await self._release(a.clients)
        elif isinstance(a, AlignClocks):
            if self.clocks is not None:
                await self.clocks.release.remote(list(a.clients), a.time)
        elif isinstance(a, SnapshotShards):
            # Each shard takes its snapshot between two of its own steps (it is consistent in
            # itself), so nobody waits for it.
            for s in self.shards:
                s.snapshot.remote(self.store)
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

    async def _release(self, states: dict) -> None:
        refs = held_refs(states)
        if refs and self.store is not None:
            await self.store.release.remote(refs)

    async def _sync_shards(self) -> None:
        if self.shard_sync == "allreduce":
            await asyncio.gather(*[s.allreduce.remote() for s in self.shards])
            return
        states = await asyncio.gather(*[s.modules_state.remote() for s in self.shards])
        avg = ray.put(weighted_average(list(states), [1.0] * len(states)))
        await asyncio.gather(*[s.load_modules_state.remote(avg) for s in self.shards])


async def _fetch(value):
    """A state handed in directly, or held in the store (a reference)."""
    return await value if isinstance(value, ray.ObjectRef) else value


SchedulerActor = ray.remote(Scheduler)
