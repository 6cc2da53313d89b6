"""The adaptive budget policy: each client's B from its observed link and step times."""

from __future__ import annotations

import pytest

from raysplit.budget.policies import DONE, EVALUATE, TRAIN, WAIT, AdaptiveConfig, Observation, Transition, make_policy
from raysplit.budget.policies.adaptive import candidate_budgets
from raysplit.training.methods import make_plan

PLAN = make_plan("fixed", (128,), (2,), lr=0.01, channels=128)


def policy(**kw):
    cfg = AdaptiveConfig(**{"target_step_s": 0.5, "adapt_every": 4, **kw})
    return make_policy("adaptive", PLAN, {0: 8, 1: 8}, options={"adaptive": {"config": cfg}})


def report(p, client, *, budget, steps=4, other=0.05, latency=0.02, mbps=10.0, epoch=0, t=1.0):
    """A training segment at ``budget`` whose wire bytes are ~1 KB per channel per step."""
    wire = int(budget * 1000 * steps)
    link = wire * 8 / (mbps * 1e6) + latency * steps
    obs = Observation(client, TRAIN, epoch, steps=steps, samples=32 * steps, sim_time=t,
                      sim_seconds=other * steps + link, uplink_s=link / 2, downlink_s=link / 2,
                      latency_s=latency * steps, wire_bytes_up=wire // 2, wire_bytes_down=wire // 2)
    return p.observe(obs)


def test_candidates():
    assert candidate_budgets(PLAN) == (4, 8, 16, 32, 64, 128)
    assert candidate_budgets(make_plan("deprune", (16, 128), (1, 1), lr=0.01, channels=128)) == (4, 8, 16, 32, 64,
                                                                                                     128)
    assert candidate_budgets(PLAN, (2, 6, 2)) == (2, 6)


def test_budget_follows_the_link_against_the_target():
    p = policy()
    d = p.decide(0)
    assert d.kind == TRAIN and d.budget == 128 and d.steps == (0, 4)
    # 128 channels at 2 Mbit/s: 0.05 + 0.02 + 128 KB·8 / 2 Mbit/s = 0.58 s > 0.5 s target;
    # the largest B with 0.07 + B·8000/2e6 <= 0.5 is 64 (128 would take 0.58, 64 takes 0.326)
    ev = report(p, 0, budget=128, mbps=2.0)
    assert p.decide(0).budget == 64 and ev == [Transition(0, 128, 64, 0.01, 0)]
    # the other client is untouched
    assert p.decide(1).budget == 128
    # a much faster link afterwards: B goes back up (smoothing 1 = only the last segment)
    q = policy(smoothing=1.0)
    report(q, 0, budget=128, mbps=1.0, other=0.6)  # compute alone is over the target
    assert q.decide(0).budget == 4  # nothing fits: the smallest
    q.decide(0)
    report(q, 0, budget=4, mbps=100.0)
    assert q.decide(0).budget == 128


def test_deadline_mode_sends_less_when_behind():
    p = policy(target_step_s=0.0, deadline_s=10.0)
    # 16 steps in all; 4 done at t=1 s: 12 left in 9 s -> 0.75 s per step
    report(p, 0, budget=128, mbps=2.0, t=1.0)  # 12 steps left in 9 s: 0.75 s each: 128 fits
    early = p.decide(0).budget
    p2 = policy(target_step_s=0.0, deadline_s=10.0)
    report(p2, 0, budget=128, mbps=2.0, t=8.0)  # late: 12 steps in 2 s: 0.167 s each
    late = p2.decide(0).budget
    assert (early, late) == (128, 16)


def test_progression_is_the_base_policy():
    p = policy(adaptive_base="sync")
    assert p.decide(0).kind == TRAIN
    report(p, 0, budget=128)
    assert p.decide(0) is WAIT  # sync: waits for client 1
    a = policy()
    for _ in range(2):
        d = a.decide(0)
        report(a, 0, budget=d.budget, epoch=d.epoch)
    e = a.decide(0)
    assert e.kind == EVALUATE and e.budget == a.budget[0]
    a.observe(Observation(0, EVALUATE, 0, correct=1, total=2))
    st = a.state_dict()
    b = policy()
    b.load_state_dict(st)
    assert b.decide(0) == a.decide(0) and b.budget == a.budget
    for ep in range(1, 2):
        for _ in range(2):
            d = a.decide(0)
            report(a, 0, budget=d.budget, epoch=ep)
        a.observe(Observation(0, EVALUATE, ep))
    assert a.decide(0).kind == DONE


def test_adaptive_needs_a_target_and_the_module():
    with pytest.raises(ValueError, match="needs a target"):
        make_policy("adaptive", PLAN, {0: 4}, options={"adaptive": {"config": AdaptiveConfig()}})
    none = make_plan("none", (4,), (1,), lr=0.01, channels=128)
    with pytest.raises(ValueError, match="has none"):
        make_policy("adaptive", none, {0: 4}, options={"adaptive": {"config": AdaptiveConfig(target_step_s=1)}})
    with pytest.raises(ValueError, match="not both"):
        AdaptiveConfig(target_step_s=1, deadline_s=2)
    with pytest.raises(ValueError, match="adaptive_base"):
        AdaptiveConfig(adaptive_base="lockstep")
