"""Budget policies behind one interface, and the scheduler's core around them."""

import numpy as np
import pytest

from raysplit.budget.policies import (
    AGGREGATE, DONE, EVALUATE, TRAIN, WAIT, AsyncPolicy, Barrier, BudgetPolicy, Observation, SyncPolicy,
    Transition, make_policy, segments,
)
from raysplit.runtime.coordinator import (
    ClientFailed, Coordinator, Record, SaveCheckpoint, SaveModel, ShareAverage, SyncShards,
)
from raysplit.training.loop import Report
from raysplit.training.methods import make_plan

PLAN = make_plan("deprune", (4, 128), (1, 1), lr=0.1, gamma=2, lk=1, channels=128)


def obs(c, kind, epoch, **kw):
    return Observation(c, kind, epoch, **kw)


def walk(p, c):
    """Complete every directive ``c`` gets until it must wait; return their kinds."""
    seen = []
    while (d := p.decide(c)) is not WAIT and d.kind != DONE:
        seen.append((d.kind, d.epoch, d.steps))
        p.observe(obs(c, d.kind, d.epoch))
    return seen


def test_segments():
    assert segments(5, 0) == [(0, 5)] and segments(5, 2) == [(0, 2), (2, 4), (4, 5)] and segments(0, 3) == [(0, 0)]


def test_every_policy_implements_the_protocol():
    for name in ("sync", "async"):
        assert isinstance(make_policy(name, PLAN, {0: 3}), BudgetPolicy)
    with pytest.raises(ValueError, match="unknown scheduling policy 'chaotic'; choose one of sync, async"):
        make_policy("chaotic", PLAN, {0: 1})


def test_sync_policy_barriers_segments_and_transition():
    p = SyncPolicy(PLAN, {0: 5, 1: 3}, segment_steps=2)
    d = p.decide(0)
    assert (d.kind, d.epoch, d.budget, d.steps, d.enter_phase, d.last_of_epoch) == (TRAIN, 0, 4, (0, 2), True, False)
    assert p.observe(obs(0, TRAIN, 0)) == []
    assert p.decide(0) is WAIT  # nobody moves until everyone is done
    assert p.observe(obs(1, TRAIN, 0)) == [Barrier(TRAIN, 0, 0, (0, 1))]
    assert p.decide(0).steps == (2, 4) and p.decide(1).steps == (2, 3)
    for c in (0, 1):
        p.observe(obs(c, TRAIN, 0))
    last = p.decide(1)
    assert last.steps == (3, 3) and last.last_of_epoch  # a shorter client still meets the barrier
    for c in (0, 1):
        p.observe(obs(c, TRAIN, 0))
    assert p.decide(0).kind == EVALUATE
    p.observe(obs(0, EVALUATE, 0))
    events = p.observe(obs(1, EVALUATE, 0))
    assert Transition(1, 4, 128, pytest.approx(0.2), None) in events
    d = p.decide(1)
    assert (d.epoch, d.budget, d.enter_phase, d.lr) == (1, 128, True, pytest.approx(0.2))
    with pytest.raises(ValueError, match="reported evaluate of epoch 0, but the run is at train of epoch 1"):
        p.observe(obs(0, EVALUATE, 0))


def test_sync_policy_aggregates_before_evaluating():
    p = SyncPolicy(PLAN, {0: 1, 1: 1}, aggregate=True)
    assert [k for k, _, _ in walk(p, 0)] == [TRAIN]
    walk(p, 1)
    assert p.decide(0).kind == AGGREGATE


def test_dropping_a_client_releases_the_barrier():
    p = SyncPolicy(PLAN, {0: 1, 1: 1})
    p.observe(obs(0, TRAIN, 0))
    assert p.decide(0) is WAIT
    assert p.drop(1) == [Barrier(TRAIN, 0, 0, (0,))]
    assert p.decide(0).kind == EVALUATE and p.decide(1).kind == DONE


def test_async_policy_is_per_client():
    p = make_policy("async", PLAN, {0: 2, 1: 2})
    assert isinstance(p, AsyncPolicy)
    p.observe(obs(0, TRAIN, 0))
    p.observe(obs(0, EVALUATE, 0))
    assert p.decide(0).epoch == 1 and p.decide(1).epoch == 0  # no waiting for client 1
    assert walk(p, 0)[-1][0] == EVALUATE and p.decide(0).kind == DONE
    assert p.progress() == {0: 2, 1: 0}
    with pytest.raises(ValueError, match="cannot average heads"):
        AsyncPolicy(PLAN, {0: 1}, aggregate=True)


@pytest.mark.parametrize("name", ["sync", "async"])
def test_policy_state_round_trip(name):
    a = make_policy(name, PLAN, {0: 2, 1: 2})
    a.observe(obs(0, TRAIN, 0))
    b = make_policy(name, PLAN, {0: 2, 1: 2})
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict()
    assert b.decide(1) == a.decide(1) and b.decide(0) == a.decide(0)


def _report(c, kind, epoch, state=None):
    return Report(obs(c, kind, epoch), state)


def test_coordinator_averages_heads_sample_weighted():
    core = Coordinator(make_policy("sync", PLAN, {0: 1, 1: 1}, aggregate=True), PLAN, {0: 1.0, 1: 3.0})
    for c in (0, 1):
        assert core.decide(c).seq == 1
        core.report(c, _report(c, TRAIN, 0))
    assert core.decide(0).kind == AGGREGATE
    core.report(0, _report(0, AGGREGATE, 0, {"modules": {"w": np.array([0.0, 4.0], np.float32)}}))
    actions = core.report(1, _report(1, AGGREGATE, 0, {"modules": {"w": np.array([4.0, 0.0], np.float32)}}))
    assert actions == [ShareAverage(0)]
    d = core.decide(0)
    assert d.kind == EVALUATE and d.seq == 3
    np.testing.assert_allclose(d.load_state["w"], [3.0, 1.0])


def test_coordinator_collects_models_and_checkpoints_and_syncs_replicas():
    plan = make_plan("prune", (128, 4), (1,), lr=0.1, channels=128)
    core = Coordinator(make_policy("sync", plan, {0: 1, 1: 1}), plan, {0: 1.0, 1: 1.0}, shards=2,
                       checkpoint_every=2)
    for c in (0, 1):
        core.decide(c)
    assert core.report(0, _report(0, TRAIN, 0)) == []
    assert core.report(1, _report(1, TRAIN, 0)) == [SyncShards()]  # a training barrier with 2 replicas
    d = core.decide(0)
    assert d.collect == ("model",)  # phase 0 ends with epoch 0
    core.report(0, _report(0, EVALUATE, 0, {"modules": {"h": 0}}))
    actions = core.report(1, _report(1, EVALUATE, 0, {"modules": {"h": 1}}))
    assert isinstance(actions[0], Record) and isinstance(actions[0].items[0], Transition)
    assert actions[1] == SaveModel(0, 128, 0, {0: {"h": 0}, 1: {"h": 1}})
    for c in (0, 1):
        core.decide(c)
        core.report(c, _report(c, TRAIN, 1))
    assert core.decide(1).collect == ("model", "checkpoint")
    core.report(0, _report(0, EVALUATE, 1, {"modules": {}, "checkpoint": {"c": 0}}))
    assert core.drop(1, "boom")[0] == Record((ClientFailed(1, "boom"),))
    assert core.decide(1).kind == DONE
    # client 0 alone completes the collections once client 1 is gone
    assert core.report(0, None) == []
    saved = core._completed_collections()
    assert saved == []  # they were completed by the drop itself


def test_coordinator_drop_completes_pending_collections():
    plan = make_plan("fixed", (4,), (1,), lr=0.1, channels=128)
    core = Coordinator(make_policy("sync", plan, {0: 1, 1: 1}), plan, {0: 1.0, 1: 1.0}, checkpoint_every=1)
    for c in (0, 1):
        core.decide(c)
        core.report(c, _report(c, TRAIN, 0))
    core.decide(0)
    core.report(0, _report(0, EVALUATE, 0, {"checkpoint": {"c": 0}}))
    actions = core.drop(1, "gone")
    assert SaveCheckpoint(0, {0: {"c": 0}}) in actions


def test_coordinator_state_round_trip():
    core = Coordinator(make_policy("sync", PLAN, {0: 1}), PLAN, {0: 1.0})
    core.decide(0)
    core.report(0, _report(0, TRAIN, 0))
    other = Coordinator(make_policy("sync", PLAN, {0: 1}), PLAN, {0: 1.0})
    other.load_state_dict(core.state_dict())
    assert other.state_dict() == core.state_dict() and other.decide(0) == core.decide(0)
