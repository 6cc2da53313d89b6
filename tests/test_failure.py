"""The failure policy, the step log, admission, exact replay and the writer's once-only
records, without Ray (fast)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from raysplit import codec
from raysplit.config import SplitConfig
from raysplit.data import ArrayDataset, batches
from raysplit.identity import Identity
from raysplit.records.rows import EvalRow
from raysplit.runtime.admission import admit, max_message_bytes
from raysplit.runtime.failure import (
    EXCLUDE,
    FAILURE_POLICIES,
    RAISE,
    RESTART,
    ExcludePolicy,
    Failure,
    FailurePolicy,
    RaisePolicy,
    RestartPolicy,
    make_failure_policy,
)
from raysplit.runtime.steplog import StepLog
from raysplit.training.client import SplitClient
from raysplit.training.guards import NonFiniteError, Refused, check_finite, check_finite_grads
from raysplit.training.loop import ClientLoop
from raysplit.training.methods import make_plan
from raysplit.training.replay import replay, step_position
from raysplit.training.server import SplitServer
from raysplit.transport.base import Reply
from raysplit.transport.inprocess import InProcessTransport

CFG = SplitConfig(model="vgg_small", input_shape=(1, 16, 16), num_classes=10, torch_threads=1, seed=2)


def failure(component="client", retryable=True, count=1):
    return Failure(component, 0, "ActorDiedError: killed", retryable, count)


# -- policies -------------------------------------------------------------------
def test_restart_policy_restarts_deaths_up_to_max_then_excludes_a_client_or_raises():
    p = RestartPolicy(max_failures=2)
    assert isinstance(p, FailurePolicy)
    assert [p.make_decision(failure(count=n)) for n in (1, 2, 3)] == [RESTART, RESTART, EXCLUDE]
    assert p.make_decision(failure(retryable=False)) is EXCLUDE  # its own code raised: would raise again
    for comp in ("shard", "scheduler"):
        assert p.make_decision(failure(comp, count=1)) is RESTART
        assert p.make_decision(failure(comp, count=3)) is RAISE


def test_exclude_and_raise_policies_and_the_registry():
    assert ExcludePolicy().make_decision(failure()) is EXCLUDE
    assert ExcludePolicy().make_decision(failure("shard")) is RAISE
    assert RaisePolicy().make_decision(failure()) is RAISE
    assert set(FAILURE_POLICIES) == {"restart", "exclude", "raise"}
    assert make_failure_policy("restart", 5).max_failures == 5
    assert make_failure_policy("exclude", 5).max_failures == 0
    with pytest.raises(ValueError, match="unknown failure policy 'retry'; choose one of restart, exclude, raise"):
        make_failure_policy("retry", 1)
    with pytest.raises(ValueError, match="max_failures must be an integer >= 0, got -1"):
        RestartPolicy(-1)
    with pytest.raises(ValueError, match="unknown component 'node'"):
        Failure("node", 0, "x", True, 1)


def test_describe_tells_a_death_from_an_error_of_the_code():
    import ray.exceptions as rex

    from raysplit.runtime.failure import describe

    msg, retry = describe(rex.ActorDiedError())
    assert retry and msg.startswith("ActorDiedError")
    msg, retry = describe(rex.RayTaskError("run", "tb", ValueError("bad label 12")))
    assert not retry and msg == "ValueError: bad label 12"
    _, retry = describe(rex.RayTaskError("run", "tb", rex.ActorDiedError()))  # its shard died
    assert retry


# -- the step log and admission -------------------------------------------------------
def reply(client, step):
    from raysplit.training.server import ServerResult

    return Reply(ServerResult(client, step, b"g" * step, 0.5, 1, 4, 0.01, 1), 0.0)


def test_step_log_answers_retries_forgets_and_round_trips_its_state():
    log = StepLog(keep=True)
    for s in (1, 2, 3):
        log.record(7, s, reply(7, s))
    assert log.lookup(7, 2).result.step == 2 and log.lookup(7, 9) is None
    assert log.is_stale(7, 3) and not log.is_stale(7, 4) and not log.is_stale(8, 1)
    assert [s for s, _ in log.since(7, 1)] == [2, 3]
    assert log.forget(7, 2) == 2 and [s for s, _ in log.since(7, 0)] == [3]
    back = StepLog()
    back.load_state_dict(log.state_dict())
    assert back.last == {7: 3} and back.lookup(7, 3).result.grad == b"ggg"
    short = StepLog(keep=False)
    for s in (1, 2):
        short.record(1, s, reply(1, s))
    assert short.lookup(1, 1) is None and short.lookup(1, 2) is not None  # only the last is kept


def message(client=0, step=1, **kw):
    c = SplitClient(CFG, client, **kw)
    c.step = step - 1
    x = np.random.default_rng(0).standard_normal((4, 1, 16, 16)).astype(np.float32)
    return c.forward(x, np.arange(4))


def test_admission_refuses_by_reason_before_any_decode():
    log = StepLog()
    big = max_message_bytes(32, (128, 4, 4))
    ok = message(client=1, step=5)
    t = admit(ok, max_bytes=big, clients=frozenset({1}), log=log)
    assert (t.client, t.step, t.cached) == (1, 5, None)
    cases = {
        "oversized": (b"x" * (big + 1), {1}),
        "malformed": (ok[:10], {1}),
        "client": (ok, {0, 2}),
    }
    for reason, (buf, clients) in cases.items():
        with pytest.raises(Refused) as e:
            admit(buf, max_bytes=big, clients=frozenset(clients), log=log)
        assert e.value.reason == reason
    log.record(1, 5, reply(1, 5))
    assert admit(ok, max_bytes=big, clients=None, log=log).cached is not None  # a retry: its reply
    with pytest.raises(Refused, match=r"refused \(replayed\): client 1 step 4"):
        admit(message(client=1, step=4), max_bytes=big, clients=None, log=log)


# -- non-finite values ------------------------------------------------------------------
def test_nonfinite_checks_name_what_they_found():
    import torch

    check_finite(torch.ones(3), "loss", "x")
    with pytest.raises(NonFiniteError, match=r"non-finite activation: c: 1 NaN and 1 Inf of 3 values") as e:
        check_finite(torch.tensor([1.0, float("nan"), float("inf")]), "activation", "c")
    assert e.value.where == "activation"
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.tensor([0.0, float("inf")])
    with pytest.raises(NonFiniteError, match="gradient"):
        check_finite_grads([p], "tail")
    big = torch.nn.Parameter(torch.ones(2))
    big.grad = torch.full((2,), 3e38)  # the sum overflows, the values are finite
    check_finite_grads([big], "tail")


def test_a_nan_loss_at_the_server_changes_nothing():
    s = SplitServer(CFG)
    before = {k: v.copy() for k, v in s.modules_state().items()}
    c = SplitClient(CFG)
    x = np.full((4, 1, 16, 16), 3e38, np.float32)  # overflows to inf inside the tail
    with pytest.raises((NonFiniteError, Refused)):
        s.train_step([c.forward(x, np.arange(4))], 0.1)
    for k, v in s.modules_state().items():
        np.testing.assert_array_equal(v, before[k])
    assert s.steps == 0


# -- exact replay ---------------------------------------------------------------------
class LoggingTransport(InProcessTransport):
    def __init__(self, server, log):
        super().__init__(server)
        self.log = log

    def round_trip(self, up, *, lr, phase):
        r = super().round_trip(up, lr=lr, phase=phase)
        self.log.record(r.result.client_id, r.result.step, r)
        return r


class Sink:
    def __init__(self):
        self.items = []

    def put(self, items):
        self.items.extend(items)


def make_loop(transport, train, plan, sink):
    return ClientLoop(client=SplitClient(CFG, 0), train=train, test=train, plan=plan, transport=transport,
                      scheduler=None, sink=sink, identity=Identity("r", "t"), shard=0, batch_size=8, seed=2,
                      t0=0.0)


def test_replay_from_a_recovery_point_and_the_log_rebuilds_the_client_exactly():
    from raysplit.budget.policies import TRAIN, Directive

    rng = np.random.default_rng(1)
    train = ArrayDataset("x", rng.standard_normal((40, 1, 16, 16)).astype(np.float32), rng.integers(0, 10, 40), 10)
    plan = make_plan("deprune", (4, 128), (1, 1), lr=0.05, channels=128)
    log, sink = StepLog(), Sink()
    loop = make_loop(LoggingTransport(SplitServer(CFG, plan=plan), log), train, plan, sink)
    state = None
    for epoch in (0, 1):  # 5 steps an epoch; the recovery point after epoch 0
        ph = plan.phase_at(epoch)
        loop.train_segment(Directive(TRAIN, epoch=epoch, phase=ph.index, budget=ph.budget, lr=plan.lr_at(epoch),
                                     steps=(0, 5) if epoch == 0 else (0, 3), enter_phase=True))
        if epoch == 0:
            state = loop.state_dict()
    assert loop.client.step == 8 and step_position(8, 5) == (1, 2)
    fresh = make_loop(None, train, plan, Sink())
    fresh.load_state_dict(state)
    assert replay(fresh, log.since(0, state["client"]["step"]), 5) == 3
    assert (fresh.epoch, fresh.batch, fresh.client.step) == (1, 3, 8)
    a, b = loop.client.state_dict(), fresh.client.state_dict()
    for k in a["modules"]:
        assert a["modules"][k].equal(b["modules"][k]), k
    assert fresh.client.budget == 128
    rows = [r for r in fresh.sink.items if hasattr(r, "step")]
    assert [r.step for r in rows] == [6, 7, 8]
    assert [r.loss for r in rows] == [r.loss for r in sink.items if getattr(r, "step", 0) > 5]
    # the next directive goes on after what was replayed
    ph = plan.phase_at(1)
    fresh.transport = InProcessTransport(SplitServer(CFG, plan=plan))
    fresh.train_segment(Directive(TRAIN, epoch=1, phase=1, budget=ph.budget, lr=0.05, steps=(0, 5), enter_phase=True))
    assert fresh.client.step == 10 and fresh.batch == 5


def test_replay_passes_over_steps_that_changed_nothing():
    rng = np.random.default_rng(1)
    train = ArrayDataset("x", rng.standard_normal((16, 1, 16, 16)).astype(np.float32), rng.integers(0, 10, 16), 10)
    plan = make_plan("fixed", (4,), (2,), lr=0.05, channels=128)
    log = StepLog()
    server = SplitServer(CFG, plan=plan)
    loop = make_loop(LoggingTransport(server, log), train, plan, Sink())
    loop.enter_phase(__import__("raysplit.budget.policies", fromlist=["Directive"]).Directive("train", epoch=0))
    loop.client.set_budget(4)
    for i, (x, y) in enumerate(batches(train, 8, shuffle=True, seed=2, epoch=0)):
        loop.step(x, y, 0, i, 0, 4, 0.05, loop.transport)
    entries = log.since(0, 0)
    del log.entries[0][1]  # step 1 was skipped (NaN): nothing of it was applied
    fresh = make_loop(None, train, plan, Sink())
    assert replay(fresh, log.since(0, 0), 2) == 1 and fresh.client.step == 2 and len(entries) == 2


# -- the writer keeps each record once -----------------------------------------------------
def test_the_writer_drops_replayed_step_and_evaluation_records(tmp_path):
    from test_records import step

    from raysplit.records.writer import RunWriter

    w = RunWriter(tmp_path / "r", config={}, clients=[0], split=CFG, method="fixed")
    w.put([step(0, 0, 0), step(0, 0, 1)])
    w.put([step(0, 0, 1), step(0, 0, 2)])  # a restarted client replays step 2
    ev = EvalRow(run="r", tenant="t", client=0, epoch=0, phase=0, budget=4, lr=0.1, correct=1, total=2,
                 bytes_up=1, seconds=0.1, time=1.0)
    w.put([ev, ev])
    assert w.totals["steps"] == 3 and w.duplicates == 2 and len(w.epoch_rows) == 1


def test_a_scheduler_that_sees_a_report_twice_counts_it_once():
    from raysplit.budget.policies import EVALUATE, TRAIN, Observation, make_policy
    from raysplit.runtime.coordinator import Coordinator
    from raysplit.training.loop import Report

    plan = make_plan("fixed", (4,), (2,), lr=0.1, channels=128)
    core = Coordinator(make_policy("sync", plan, {0: 3, 1: 3}), plan, {0: 1.0, 1: 1.0}, snapshot_shards=True)
    d = core.decide(0)
    rep = Report(Observation(0, TRAIN, 0, steps=3), seq=d.seq)
    core.report(0, rep)
    core.report(0, rep)  # retried after the scheduler restarted: not "reported twice"
    core.report(1, Report(Observation(1, TRAIN, 0, steps=3), seq=core.decide(1).seq))
    assert core.decide(0).kind == EVALUATE
    acts = []
    for c in (0, 1):
        acts += core.report(c, Report(Observation(c, EVALUATE, 0), seq=core.decide(c).seq))
    assert [type(a).__name__ for a in acts] == ["SnapshotShards"]
    back = Coordinator(make_policy("sync", plan, {0: 3, 1: 3}), plan, {0: 1.0, 1: 1.0})
    back.load_state_dict(core.state_dict())
    assert back.answered == core.answered


def test_recovery_points_mid_epoch_bound_the_log_and_replay_from_them():
    from raysplit.budget.policies import TRAIN, Directive

    rng = np.random.default_rng(3)
    train = ArrayDataset("x", rng.standard_normal((48, 1, 16, 16)).astype(np.float32), rng.integers(0, 10, 48), 10)
    plan = make_plan("fixed", (4,), (1,), lr=0.05, channels=128)
    log, points, log_all = StepLog(), [], []

    def point(state):
        points.append(state)
        log_all.extend(log.since(0, 0))
        log.forget(0, state["client"]["step"])

    loop = make_loop(LoggingTransport(SplitServer(CFG, plan=plan), log), train, plan, Sink())
    loop.recovery_point, loop.recovery_bytes = point, 3 * 1000  # a step here sends back ~2 KB: a point every other step
    loop.train_segment(Directive(TRAIN, epoch=0, phase=0, budget=4, lr=0.05, steps=(0, 6), enter_phase=True))
    assert [p["batch"] for p in points] == [2, 4, 6]  # every other step, mid-epoch
    assert len(log.entries[0]) < 6  # forgotten up to the last point
    fresh = make_loop(None, train, plan, Sink())
    fresh.load_state_dict(points[0])  # the first point, then the log (as if the others had not come)
    replay(fresh, [(s, r) for s, r in log_all if s > 2], 6)
    assert (fresh.client.step, fresh.batch) == (6, 6)
    a, b = loop.client.state_dict()["modules"], fresh.client.state_dict()["modules"]
    assert all(a[k].equal(b[k]) for k in a)


def test_an_evaluation_hands_in_a_point_only_once_the_log_outweighs_it_or_a_state_was_loaded():
    """After an evaluation a point is handed in once the gradient bytes since the last one
    reach recovery_min_bytes (None, what a cluster's client hosts use: the point's own
    size); a directive that loaded an average always hands one in (that change is in no log)."""
    from raysplit.budget.policies import EVALUATE, TRAIN, Directive
    from raysplit.training.state import tensor_bytes

    rng = np.random.default_rng(5)
    train = ArrayDataset("x", rng.standard_normal((48, 1, 16, 16)).astype(np.float32), rng.integers(0, 10, 48), 10)
    plan = make_plan("fixed", (4,), (1,), lr=0.05, channels=128)
    points = []
    loop = make_loop(InProcessTransport(SplitServer(CFG, plan=plan)), train, plan, Sink())
    loop.recovery_point, loop.recovery_min_bytes = points.append, None
    loop.test = ArrayDataset("x", train.x[:8], train.y[:8], 10)

    def epoch(e: int, steps: int = 1, **kw) -> int:
        loop.train_segment(Directive(TRAIN, epoch=e, phase=0, budget=4, lr=0.05, steps=(0, steps), enter_phase=e == 0))
        before = loop._since_point
        loop.evaluate_epoch(Directive(EVALUATE, epoch=e, phase=0, budget=4, lr=0.05, **kw))
        return before

    step_bytes = epoch(0)
    assert 0 < step_bytes < tensor_bytes(loop.client.state_dict()) == loop._point_bytes and points == []
    loop.recovery_min_bytes = 3 * step_bytes  # the rule itself, with a log that fills in a few steps
    assert epoch(1) == 2 * step_bytes and points == []
    assert epoch(2) == 3 * step_bytes and len(points) == 1 and loop._since_point == 0
    assert points[0]["client"]["step"] == 3
    epoch(3, load_state=loop.client.modules_state())
    assert len(points) == 2  # an average was loaded: a point, however small the log
    loop.recovery_min_bytes = 0  # the default: after every evaluation
    epoch(4)
    assert len(points) == 3


@pytest.mark.parametrize("where", ["activation", "loss"])
def test_nonfinite_steps_are_skipped_or_stop_the_client_never_applied(where):
    from raysplit.budget.policies import TRAIN, Directive
    from raysplit.training.guards import SkippedStep

    rng = np.random.default_rng(4)
    x = rng.standard_normal((24, 1, 16, 16)).astype(np.float32)
    if where == "activation":
        x[8:16] = np.nan  # the second batch: NaN in the input makes the head's output NaN
    else:
        x[8:16] = 3e38  # finite input that overflows to inf in the tail: the server's loss is not finite
    train = ArrayDataset("x", x, rng.integers(0, 10, 24), 10)
    plan = make_plan("fixed", (4,), (1,), lr=0.05, channels=128)
    d = Directive(TRAIN, epoch=0, phase=0, budget=4, lr=0.05, steps=(0, 3), enter_phase=True)
    for policy in ("skip", "stop"):
        server = SplitServer(CFG, plan=plan)
        loop = make_loop(InProcessTransport(server), train, plan, Sink())
        loop.batch_size, loop.on_nonfinite = 8, policy
        if policy == "stop":
            with pytest.raises(NonFiniteError) as e:
                loop.train_segment(d)
            assert e.value.where in ("activation", "loss")
            continue
        report = loop.train_segment(d)
        skipped = [r for r in loop.sink.items if isinstance(r, SkippedStep)]
        rows = [r for r in loop.sink.items if hasattr(r, "loss") and not isinstance(r, SkippedStep)]
        assert len(skipped) >= 1 and len(rows) + len(skipped) == 3 and report.obs.steps == len(rows)
        assert all(np.isfinite(r.loss) for r in rows) and skipped[0].where in ("activation", "loss")
        assert server.steps == len(rows)  # nothing of a skipped step reached the tail's weights
        for p in server.modules.parameters():
            assert torch_isfinite(p)
        for p in loop.client.modules.parameters():
            assert torch_isfinite(p)


def torch_isfinite(p) -> bool:
    import torch

    return bool(torch.isfinite(p.detach()).all())
