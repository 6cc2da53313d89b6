"""Participant selection (raysplit.budget.selection) and the sync policy's rounds."""

from __future__ import annotations

import numpy as np
import pytest

from raysplit.budget.policies import AGGREGATE, DONE, EVALUATE, TRAIN, WAIT, Observation, Round, SyncPolicy, make_policy
from raysplit.budget.selection import Always, Markov, Selection, parse_availability, parse_per_round, read_trace, round_size
from raysplit.config import ClusterConfig
from raysplit.records.rows import EvalRow
from raysplit.runtime.coordinator import Coordinator, Record, ShareAverage
from raysplit.runtime.driver import expected_steps
from raysplit.training.loop import Report
from raysplit.training.methods import make_plan

PLAN = make_plan("deprune", (4, 128), (2, 1), lr=0.1, gamma=2, lk=1, channels=128)


def test_round_sizes_counts_and_fractions():
    assert round_size(None, 10) == 10 and round_size(3, 10) == 3 and round_size(30, 10) == 10
    assert round_size(0.25, 10) == 2 and round_size(0.01, 10) == 1 and round_size(1.0, 10) == 10
    assert parse_per_round("all") is None and parse_per_round("5") == 5 and parse_per_round("0.5") == 0.5
    for bad in ("0", "1.5", "-2", "x", 0, 2.0):
        with pytest.raises(ValueError, match="clients_per_round"):
            parse_per_round(bad)


def test_uniform_selection_is_seeded_and_covers_everyone_over_rounds():
    s = Selection(10, Always(), seed=7)
    rounds = [s.participants(r, range(100)) for r in range(400)]
    assert all(len(r) == 10 and len(set(r)) == 10 for r in rounds)
    assert rounds == [Selection(10, Always(), seed=7).participants(r, range(100)) for r in range(400)]
    assert rounds != [Selection(10, Always(), seed=8).participants(r, range(100)) for r in range(400)]
    counts = np.bincount(np.concatenate(rounds), minlength=100)
    # uniform: 40 each on average (binomial, sd 6): nobody starved, nobody favoured
    assert counts.sum() == 4000 and counts.min() >= 15 and counts.max() <= 65
    assert Selection(5).participants(0, [3, 9]) == (3, 9)  # fewer live than asked: all of them


def test_markov_availability_has_the_asked_periods():
    m = Markov(4, 2, seed=1)
    states = np.array([[m.active(c, r) for r in range(300)] for c in range(200)])
    assert states.mean() == pytest.approx(4 / 6, abs=0.03)  # stationary share active
    runs = [len(run) for row in states for run in "".join("1" if v else "0" for v in row).split("0") if run]
    assert np.mean(runs) == pytest.approx(4, rel=0.15)  # mean active period
    s = Selection(0.5, m, seed=1)
    for r in range(5):
        got = s.participants(r, range(200))
        assert all(m.active(c, r) for c in got) and len(got) == 100
    with pytest.raises(ValueError, match="mean ON period 0.5 rounds"):
        Markov(0.5, 2)


def test_trace_availability(tmp_path):
    f = tmp_path / "trace.csv"
    f.write_text("client,start,end\n0,0,2\n1,1,3\n2,0,1\n2,2,4\n")
    t = read_trace(f)
    assert [[t.active(c, r) for r in range(4)] for c in range(3)] == [
        [True, True, False, False], [False, True, True, False], [True, False, True, True]]
    assert Selection(None, t).participants(1, range(3)) == (0, 1)
    with pytest.raises(ValueError, match=r"no row for clients \[3\]"):
        ClusterConfig(clients=4, availability=f"trace:{f}")
    assert ClusterConfig(clients=3, availability=f"trace:{f}").selection().participants(3, range(3)) == (2,)
    (tmp_path / "bad.csv").write_text("client,start,end\n0,3,1\n")
    with pytest.raises(ValueError, match=r"line 2: client 0 period \[3, 1\)"):
        read_trace(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="no such file"):
        parse_availability(f"trace:{tmp_path / 'none.csv'}")
    with pytest.raises(ValueError, match="unknown availability 'sometimes'; allowed: always, markov"):
        parse_availability("sometimes")


def drive(p: SyncPolicy, clients, events, observation=None, after=None):
    """Run the policy to the end as clients would; return {epoch: clients that trained}.
    ``observation(client, directive)`` builds a TRAIN report (default: a bare one);
    ``after(directive)`` runs after each report is observed."""
    trained: dict[int, set] = {}
    pending = set(clients)
    for _ in range(10_000):
        if not pending:
            break
        for c in sorted(pending):
            d = p.decide(c)
            if d is WAIT:
                continue
            if d.kind == DONE:
                pending.discard(c)
                continue
            obs = Observation(c, d.kind, d.epoch)
            if d.kind == TRAIN:
                trained.setdefault(d.epoch, set()).add(c)
                if observation is not None:
                    obs = observation(c, d)
            events += p.observe(obs)
            if after is not None:
                after(d)
    assert not pending
    return trained


def test_sync_policy_trains_only_each_rounds_participants():
    sel = Selection(3, Always(), seed=2)
    p = make_policy("sync", PLAN, {c: 2 for c in range(10)}, aggregate=True, selection=sel)
    events = []
    trained = drive(p, range(10), events)
    assert trained == {e: set(sel.participants(e, range(10))) for e in range(3)}
    rounds = [e for e in events if isinstance(e, Round)]
    assert [r.epoch for r in rounds] == [0, 1, 2] and all(len(r.clients) == 3 for r in rounds)
    assert any(getattr(e, "to_budget", None) == 128 for e in events)  # the transition applies to the round
    assert expected_steps({c: 2 for c in range(10)}, 3, sel) == 18
    with pytest.raises(ValueError, match="participant selection needs policy 'sync'"):
        make_policy("async", PLAN, {0: 1, 1: 1}, selection=sel)


def test_an_epoch_nobody_is_available_for_is_skipped_and_a_dropped_round_moves_on(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("client,start,end\n0,0,1\n1,0,1\n0,2,3\n1,2,3\n")
    sel = Selection(None, read_trace(f))
    p = SyncPolicy(PLAN, {0: 1, 1: 1}, selection=sel)
    events = []
    trained = drive(p, [0, 1], events)
    assert trained == {0: {0, 1}, 2: {0, 1}}
    assert [r.clients for r in events if isinstance(r, Round)] == [(0, 1), (), (0, 1)]
    # Every participant of a round fails: the round ends, the next one starts.
    p = SyncPolicy(PLAN, {c: 1 for c in range(4)}, selection=Selection(1, Always(), seed=0))
    (first,) = p.round
    p.drop(first)
    assert p.epoch == 1 and p.round and first not in p.round


def test_splitfed_clients_that_sat_out_start_from_the_latest_average():
    sel = Selection(1, Always(), seed=0)
    policy = make_policy("sync", PLAN, {0: 1, 1: 1, 2: 1}, aggregate=True, selection=sel)
    core = Coordinator(policy, PLAN, {0: 1.0, 1: 1.0, 2: 1.0})
    loaded = {}
    pending, reports = {0, 1, 2}, {0: None, 1: None, 2: None}
    for _ in range(1000):
        if not pending:
            break
        for c in sorted(pending):
            for a in core.report(c, reports[c]):
                if isinstance(a, ShareAverage):
                    pass
            reports[c] = None
            d = core.decide(c)
            if d is WAIT:
                continue
            if d.kind == DONE:
                pending.discard(c)
                continue
            if d.kind == TRAIN and d.load_state is not None:
                loaded.setdefault(c, []).append(d.epoch)
            state = {"modules": {"w": np.full(2, float(c + 10 * d.epoch))}} if d.kind == AGGREGATE else None
            reports[c] = Report(Observation(c, d.kind, d.epoch), state)
    rounds = [sel.participants(e, range(3)) for e in range(3)]
    # A client trains epoch e > 0 after an average it has not loaded yet exactly when it
    # did not take part in the previous round.
    expect = {}
    for e in range(1, 3):
        (c,) = rounds[e]
        if c not in rounds[e - 1]:
            expect.setdefault(c, []).append(e)
    assert loaded == expect


def test_writer_waits_for_the_rounds_participants_only(tmp_path):
    from raysplit.config.split import SplitConfig
    from raysplit.records.writer import RunWriter

    w = RunWriter(tmp_path / "run", config={}, clients=[0, 1, 2], split=SplitConfig(), method="deprune")
    row = lambda c, e: EvalRow(run="r", tenant="t", client=c, epoch=e, phase=0, budget=4, lr=0.1, correct=1,  # noqa: E731
                               total=2, bytes_up=0, seconds=0.0, time=0.0)
    w.put([Round(0, (0, 2)), row(0, 0)])
    assert not w.epoch_rows
    w.put([row(2, 0)])
    assert [r.epoch for r in w.epoch_rows] == [0]
    w.put([Round(1, ()), Round(2, (1,)), row(1, 2)])  # epoch 1: nobody took part: no row
    assert [r.epoch for r in w.epoch_rows] == [0, 2]


def test_cluster_config_checks_selection():
    cc = ClusterConfig(clients=20, clients_per_round=0.25, availability="markov:3,2")
    assert cc.selection().per_round == 0.25 and isinstance(cc.selection().availability, Markov)
    assert ClusterConfig().selection().everyone
    with pytest.raises(ValueError, match="needs policy 'sync'"):
        ClusterConfig(clients=4, clients_per_round=2, policy="async")


def test_adaptive_policy_with_selection_adapts_only_the_rounds_participants():
    from raysplit.budget.policies import AdaptiveConfig, Transition

    sel = Selection(3, Always(), seed=5)
    clients = range(10)
    cfg = AdaptiveConfig(target_step_s=0.05, adaptive_base="sync")
    p = make_policy("adaptive", PLAN, {c: 2 for c in clients}, aggregate=True, selection=sel,
                    options={"adaptive": {"config": cfg}})
    start = dict(p.budget)
    assert set(start.values()) == {4}
    budgets_after: dict[int, dict] = {}
    events: list = []

    def observation(c, d):
        n = d.steps[1] - d.steps[0]
        wire = n * d.budget * 100  # a fast link: 1 us per byte, 1 ms of compute per step
        return Observation(c, TRAIN, d.epoch, steps=n, samples=8 * n, sim_time=1.0,
                           sim_seconds=n * 0.001 + wire * 1e-6, uplink_s=wire * 1e-6, wire_bytes_up=wire)

    def after(d):
        if d.kind == EVALUATE:
            budgets_after[d.epoch] = dict(p.budget)

    trained = drive(p, clients, events, observation, after)
    assert trained == {e: set(sel.participants(e, clients)) for e in range(3)}
    # Only participants were observed, so only they got per-client transitions; the rest kept 4.
    adapted = {e.client for e in events if isinstance(e, Transition) and e.client is not None}
    assert adapted == set().union(*trained.values())
    for e, who in trained.items():
        seen = set().union(*(trained[k] for k in range(e + 1)))
        assert all(budgets_after[e][c] == 4 for c in clients if c not in seen)
        assert all(budgets_after[e][c] > 4 for c in seen)
    # The deadline counts only the steps of the rounds a client is drawn for.
    rounds = {c: sum(c in sel.participants(e, clients) for e in range(3)) for c in clients}
    assert p.total_steps == {c: 2 * rounds[c] for c in clients}


def test_selection_with_the_adaptive_policy_needs_its_sync_base():
    from raysplit.budget.policies import AdaptiveConfig

    sel = Selection(2, Always(), seed=1)
    with pytest.raises(ValueError, match="needs --adaptive-base sync for it, got adaptive_base 'async'"):
        make_policy("adaptive", PLAN, {0: 1, 1: 1, 2: 1}, selection=sel,
                    options={"adaptive": {"config": AdaptiveConfig(target_step_s=1.0)}})
    from raysplit.config import TrainConfig
    from raysplit.config.link import LinkConfig

    base = dict(clients=8, clients_per_round=2, policy="adaptive", train=TrainConfig(link=LinkConfig(link="wifi")))
    cc = ClusterConfig(**base, adaptive=AdaptiveConfig(target_step_s=1.0, adaptive_base="sync"))
    assert cc.selection().per_round == 2
    with pytest.raises(ValueError, match="got policy 'adaptive' with adaptive_base 'async'"):
        ClusterConfig(**base, adaptive=AdaptiveConfig(target_step_s=1.0))
