"""The scheduler actor wakes its waiting clients only when what they wait for changes.

The actor class runs here as a plain object under asyncio (no Ray: no store, no link, no
shards), with N client coroutines walking a sync schedule. Every ``decide`` a waiter makes
after a wake-up is counted: with a wake-up on every report (the old behaviour) an epoch of
N clients costs about N^2 / 2 decisions; woken only when a barrier passes, about 2N.
No timing is involved: the counts are exact.
"""

from __future__ import annotations

import asyncio

import pytest

from raysplit.budget.policies import DONE, WAIT, Observation
from raysplit.identity import Identity
from raysplit.runtime.actors.scheduler import Scheduler
from raysplit.training.loop import Report
from raysplit.training.methods import make_plan

PLAN = make_plan("deprune", (4, 16), (2, 1), lr=0.1, gamma=2, lk=1, channels=16)  # 3 epochs, 1 transition


class _Remote:
    def __init__(self, sink: list) -> None:
        self.sink = sink

    def remote(self, items):
        self.sink.extend(items)


class Buffer:
    """Stands in for the record buffer actor: ``put.remote(items)`` keeps them."""

    def __init__(self) -> None:
        self.items: list = []
        self.put = _Remote(self.items)


def walk(n: int, policy: str = "sync", drop: int | None = None) -> tuple[int, int, Buffer, dict]:
    """Run n clients through PLAN; returns (decisions, WAITs, buffer, {client: directives})."""
    buf = Buffer()
    sched = Scheduler(policy, PLAN, {c: 2 for c in range(n)}, {c: 1.0 for c in range(n)}, Identity("r", "t"),
                      [], "average", buf)
    counts = {"decide": 0, "wait": 0}
    decide = sched.core.decide

    def counted(c):
        d = decide(c)
        counts["decide"] += 1
        counts["wait"] += d is WAIT
        return d

    sched.core.decide = counted
    seen: dict[int, list] = {c: [] for c in range(n)}

    async def client(c: int) -> None:
        d = await sched.next(c, None)
        while d.kind != DONE:
            seen[c].append((d.kind, d.epoch, d.budget))
            if c == drop and d.epoch == 1:
                await sched.drop(c, "injected")
                return
            # Reports arrive one at a time, as over a network: client c reports 4c loop
            # iterations after its directive, so waiters woken by one report decide
            # before the next arrives (no wall-clock time involved).
            for _ in range(4 * c + 1):
                await asyncio.sleep(0)
            obs = Observation(c, d.kind, d.epoch, steps=d.steps[1] - d.steps[0], samples=8, loss=1.0)
            d = await sched.next(c, Report(obs, seq=d.seq))

    async def main():
        await asyncio.wait_for(asyncio.gather(*[client(c) for c in range(n)]), 30)

    asyncio.run(main())
    return counts["decide"], counts["wait"], buf, seen


@pytest.mark.parametrize("n", [8, 64])
def test_waiters_are_woken_only_when_a_barrier_passes(n):
    decisions, waits, buf, seen = walk(n)
    # 3 epochs x (train, evaluate) = 6 barriers; each client gets 6 directives and DONE.
    assert all(len(v) == 6 for v in seen.values())
    assert [b for _, _, b in seen[0]] == [4, 4, 4, 4, 16, 16]  # the transition applies to everyone
    # Per barrier each client decides at most twice (after its report: WAIT, or the last one:
    # go; after the barrier's wake-up: go), plus the final DONE decisions.
    assert decisions <= 6 * 2 * n + 2 * n
    assert waits <= 6 * n
    # The old behaviour (every report woke every waiter) needs ~n^2/2 decisions per barrier.
    if n >= 64:
        assert decisions < 6 * n * n / 4


def test_a_drop_wakes_the_waiters_it_releases():
    decisions, _, buf, seen = walk(8, drop=3)
    assert len(seen[3]) == 3  # it trained epoch 0, evaluated it, got epoch 1's training, then failed
    assert all(len(seen[c]) == 6 for c in range(8) if c != 3)  # the others were not left waiting
    assert any(type(i).__name__ == "ClientFailed" for i in buf.items)


def test_async_clients_never_wait():
    decisions, waits, _, seen = walk(8, policy="async")
    assert waits == 0 and decisions == 8 * 7 and all(len(v) == 6 for v in seen.values())
