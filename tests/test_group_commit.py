"""Group commit (``runtime/group_commit.py``) and the scheduler journal built on it.

No Ray and no wall-clock time: writes are futures the test completes by hand, so every
count is exact. A naive journal (one write per call, or callers joining the write already
in flight) fails these tests: the first by its number of writes, the second by returning
before a write that started after its call.
"""

from __future__ import annotations

import asyncio
import copy
import pickle

import pytest
import ray

from raysplit.budget.policies import DONE, Observation
from raysplit.identity import Identity
from raysplit.runtime.actors.scheduler import Scheduler
from raysplit.runtime.group_commit import GroupCommit
from raysplit.training.loop import Report
from raysplit.training.methods import make_plan


class Store:
    """Writes held open until the test completes them: ``writes`` is [(snapshot, future)]."""

    def __init__(self, state: dict) -> None:
        self.state = state
        self.writes: list[tuple[dict, asyncio.Future]] = []

    def snapshot(self) -> dict:
        return dict(self.state)

    def write(self, snap: dict) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.writes.append((snap, fut))
        return fut


async def settle(n: int = 10) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_callers_during_a_write_share_one_next_write():
    async def main():
        store = Store({"x": 0})
        gc = GroupCommit(store.snapshot, store.write)
        first = asyncio.ensure_future(gc.commit())
        await settle()
        assert len(store.writes) == 1  # in flight
        waiters = []
        for i in range(1, 11):  # 10 callers, each after a change of its own
            store.state["x"] = i
            waiters.append(asyncio.ensure_future(gc.commit()))
        await settle()
        assert len(store.writes) == 1  # at most one write in flight: they wait
        store.writes[0][1].set_result(None)
        await settle()
        assert first.done() and not first.exception()
        # the write in flight started before their calls: none of them may return yet
        assert not any(w.done() for w in waiters)
        assert len(store.writes) == 2  # ONE more write for all ten, not ten
        assert store.writes[1][0] == {"x": 10}  # its snapshot has every change made before it started
        store.writes[1][1].set_result(None)
        await settle()
        assert all(w.done() and not w.exception() for w in waiters)
        assert len(store.writes) == 2
        assert (gc.stats.requests, gc.stats.saves, gc.stats.failed) == (11, 2, 0)

    asyncio.run(main())


def test_the_snapshot_is_taken_when_the_write_starts_not_later():
    async def main():
        store = Store({"x": 0})
        gc = GroupCommit(store.snapshot, store.write)
        a = asyncio.ensure_future(gc.commit())
        await settle()
        store.state["x"] = 1  # changed while the write is in flight: not in it
        b = asyncio.ensure_future(gc.commit())
        await settle()
        store.writes[0][1].set_result(None)
        await settle()
        assert store.writes[0][0] == {"x": 0} and a.done() and not b.done()
        assert store.writes[1][0] == {"x": 1}
        store.writes[1][1].set_result(None)
        await settle()
        assert b.done()

    asyncio.run(main())


def test_callers_one_after_another_each_get_their_own_write():
    async def main():
        store = Store({"x": 0})
        gc = GroupCommit(store.snapshot, store.write)
        for i in range(3):
            store.state["x"] = i
            t = asyncio.ensure_future(gc.commit())
            await settle()
            store.writes[-1][1].set_result(None)
            await t
        assert [s for s, _ in store.writes] == [{"x": 0}, {"x": 1}, {"x": 2}]

    asyncio.run(main())


def test_a_failed_write_raises_to_every_caller_it_covers_and_a_later_one_succeeds():
    async def main():
        store = Store({"x": 0})
        gc = GroupCommit(store.snapshot, store.write)
        a = asyncio.ensure_future(gc.commit())
        await settle()
        covered = [asyncio.ensure_future(gc.commit()) for _ in range(3)]
        await settle()
        store.writes[0][1].set_result(None)
        await settle()
        store.writes[1][1].set_exception(OSError("store down"))
        await settle()
        assert a.done() and a.exception() is None
        for w in covered:
            assert isinstance(w.exception(), OSError)
        later = asyncio.ensure_future(gc.commit())
        await settle()
        assert len(store.writes) == 3
        store.writes[2][1].set_result(None)
        await later
        assert (gc.stats.saves, gc.stats.failed) == (3, 1)

    asyncio.run(main())


def test_a_snapshot_that_raises_reaches_its_callers():
    async def main():
        def broken():
            raise ValueError("cannot serialise")

        gc = GroupCommit(broken, lambda snap: None)
        with pytest.raises(ValueError, match="cannot serialise"):
            await gc.commit()

    asyncio.run(main())


def test_a_cancelled_caller_does_not_cancel_the_write_of_the_others():
    async def main():
        store = Store({"x": 0})
        gc = GroupCommit(store.snapshot, store.write)
        a, b = asyncio.ensure_future(gc.commit()), asyncio.ensure_future(gc.commit())
        await settle()
        a.cancel()
        await settle()
        assert not b.done()
        store.writes[0][1].set_result(None)
        await settle()
        assert a.cancelled() and b.done() and not b.exception()

    asyncio.run(main())


# -- the scheduler's journal: write-ahead kept, writes shared --------------------------
PLAN = make_plan("deprune", (4, 16), (2, 1), lr=0.1, gamma=2, lk=1, channels=16)  # 3 epochs, 1 transition


class SlowStore:
    """Stands in for the state store actor: ``put.remote`` serialises its value when called
    (as Ray does) and the write becomes durable a few event-loop turns later."""

    def __init__(self, turns: int) -> None:
        self.turns = turns
        self.durable: dict | None = None  # the newest completed write
        self.puts = 0
        self.in_flight = 0
        self.most_in_flight = 0
        store = self

        class _Put:
            def remote(self, key, value):
                snap = pickle.loads(pickle.dumps(value))
                store.puts += 1
                return store._write(snap)

        self.put = _Put()

    async def _write(self, snap: dict) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await settle(self.turns)
        self.durable = snap
        self.in_flight -= 1


class CheckingBuffer:
    """The record buffer: an action's effect (a record) is released only once the journal
    in the store lists that action as pending (write-ahead for actions)."""

    def __init__(self, store: SlowStore) -> None:
        self.store, self.items = store, []
        buf = self

        class _Put:
            def remote(self, items):
                pending = [i for a in buf.store.durable["pending"] for i in getattr(a, "items", ())]
                for item in items:
                    assert item in pending, f"{item} released before a journal listing it was durable"
                buf.items.extend(items)

        self.put = _Put()


@pytest.mark.parametrize("n", [16, 64])
def test_scheduler_answers_only_after_a_journal_with_the_report_is_durable(n, monkeypatch):
    # the actor class as a plain object: not a restarted actor (and no Ray started to ask)
    monkeypatch.setattr(ray, "get_runtime_context", lambda: type("Ctx", (), {"was_current_actor_reconstructed": False}))
    store = SlowStore(turns=20)
    buf = CheckingBuffer(store)
    sched = Scheduler("sync", PLAN, {c: 2 for c in range(n)}, {c: 1.0 for c in range(n)}, Identity("r", "t"),
                      [], "average", buf, store=store)
    answered = 0

    async def client(c: int) -> None:
        nonlocal answered
        d = await sched.next(c, None)
        while d.kind != DONE:
            for _ in range(c % 5 + 1):
                await asyncio.sleep(0)
            seq = d.seq
            d = await sched.next(c, Report(Observation(c, d.kind, d.epoch, steps=d.steps[1] - d.steps[0],
                                                       samples=8, loss=1.0), seq=seq))
            # the journal in the store already counts this report
            assert store.durable["core"]["state"]["answered"][c] >= seq
            answered += 1

    async def main():
        await asyncio.wait_for(asyncio.gather(*[client(c) for c in range(n)]), 60)

    asyncio.run(main())
    stats = sched.journal.stats
    assert answered == 6 * n  # 3 epochs x (train, evaluate)
    assert any(type(i).__name__ == "Transition" for i in buf.items)  # an action was checked
    assert store.most_in_flight == 1
    assert stats["saves"] == store.puts
    # one write per call (and one more per call with actions) would be >= 7n; shared: far fewer
    assert stats["requests"] >= 7 * n
    assert store.puts < stats["requests"] / 4
    # a restarted scheduler reloads the newest journal: every client's progress
    reborn = Scheduler("sync", PLAN, {c: 2 for c in range(n)}, {c: 1.0 for c in range(n)}, Identity("r", "t"),
                       [], "average", buf, store=store)
    from raysplit.runtime.recovery import load_core_state

    load_core_state(reborn.core, copy.deepcopy(store.durable["core"]))
    assert reborn.core.state_dict()["answered"] == sched.core.state_dict()["answered"]
