"""Virtual clients (raysplit.runtime.virtual): parking is exact, slots bound the clients in
flight, a failed directive parks nothing, fresh clients hold nothing of their own."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from raysplit.config import ClusterConfig
from raysplit.config.split import SplitConfig
from raysplit.data import ArrayDataset, batches
from raysplit.runtime.virtual import ClientPool, load, park, summarise
from raysplit.training.client import SplitClient
from raysplit.training.loop import train_step
from raysplit.training.methods import Stage
from raysplit.training.server import SplitServer
from raysplit.training.state import PrivateRng
from raysplit.transport.emulated import EmulatedTransport
from raysplit.transport.inprocess import InProcessTransport

CFG = SplitConfig(model="vgg_small", input_shape=(1, 16, 16), num_classes=10, torch_threads=1, seed=4)


def data(client: int) -> ArrayDataset:
    rng = np.random.default_rng(client)
    return ArrayDataset("digits", rng.normal(size=(96, 1, 16, 16)).astype(np.float32),
                        rng.integers(0, 10, 96).astype(np.int64), 10)


# Three "directives" per client: a training segment each, with what a plan changes
# between them (budget, learning rate, stage with a frozen group, a filter reset).
ROUNDS = [
    dict(budget=4, lr=0.05, stage=Stage(), reset=None),
    dict(budget=8, lr=0.02, stage=Stage(frozen=("head",)), reset="deprune"),
    dict(budget=16, lr=0.01, stage=Stage(regularizers=()), reset=None),
]


def segment(client: SplitClient, server: SplitServer, ds: ArrayDataset, r: int, prev_budget: int) -> list:
    cfg = ROUNDS[r]
    client.set_stage(cfg["stage"])
    if cfg["reset"]:
        client.reset_filter(cfg["reset"], prev_budget, seed=10 + r)
    client.set_budget(cfg["budget"])
    client.set_lr(cfg["lr"])
    out = []
    for x, y in batches(ds, 32, shuffle=True, seed=1, epoch=r, max_batches=2):
        ex, reg, _ = train_step(client, InProcessTransport(server), x, y, lr=cfg["lr"], phase=0)
        out.append((ex.bytes_up, ex.bytes_down, ex.reply.result.loss, reg.get("prune", 0.0)))
    return out


def test_parked_clients_train_bit_for_bit_like_materialised_ones():
    ids = [0, 1, 2]
    ds = {c: data(c) for c in ids}
    # Reference: every client materialised for the whole run, one server each.
    ref_clients = {c: SplitClient(CFG, c) for c in ids}
    ref_servers = {c: SplitServer(CFG) for c in ids}
    ref = {c: [] for c in ids}
    # Virtual: the three clients share one slot; same servers (one each), same order.
    pool = ClientPool(lambda c: SplitClient(CFG, c), ids, slots=1, threads=1, seed=CFG.seed)
    servers = {c: SplitServer(CFG) for c in ids}
    got = {c: [] for c in ids}
    prev = 4
    for r in range(len(ROUNDS)):
        for c in ids:
            ref[c] += segment(ref_clients[c], ref_servers[c], ds[c], r, prev)
            with pool.materialised(c) as slot:
                assert slot.client.client_id == c
                got[c] += slot.call(segment, slot.client, servers[c], ds[c], r, prev)
        prev = ROUNDS[r]["budget"]
    for c in ids:
        assert [g[:2] for g in got[c]] == [g[:2] for g in ref[c]]  # the same bytes, exactly
        np.testing.assert_array_equal([g[2:] for g in got[c]], [g[2:] for g in ref[c]])
        with pool.materialised(c) as slot:
            mine = slot.call(slot.client.modules_state)
            assert slot.client.step == ref_clients[c].step
            assert slot.client.frozen == ref_clients[c].frozen == ()
        theirs = ref_clients[c].modules_state()
        assert mine.keys() == theirs.keys()
        for k in mine:
            np.testing.assert_array_equal(mine[k], theirs[k])
    # The clients really did differ (different data): the check above is not vacuous.
    assert got[0] != got[1]
    pool.shutdown()


def test_park_and_load_carry_the_rng_and_momentum():
    a, b = SplitClient(CFG, 7), SplitClient(CFG, 8)
    a.rng = PrivateRng(123, True)
    b.rng = PrivateRng(999, True)
    ds = data(7)
    segment(a, SplitServer(CFG), ds, 0, 4)
    p = park(a)
    assert p.momentum and p.rng is not None and p.step == a.step
    load(b, 7, p)
    assert b.client_id == 7 and b.step == a.step and b.budget == a.budget
    assert np.array_equal(b.rng.state_dict().numpy(), a.rng.state_dict().numpy())
    sa, sb = a.opt.state_dict()["state"], b.opt.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        assert np.array_equal(sa[i]["momentum_buffer"].numpy(), sb[i]["momentum_buffer"].numpy())


def test_fresh_clients_hold_nothing_of_their_own_and_trained_ones_hold_their_state():
    ids = list(range(50))
    pool = ClientPool(lambda c: SplitClient(CFG, c), ids, slots=2, threads=1, seed=CFG.seed)
    assert pool.stats().parked_bytes == 0
    with pool.materialised(3) as slot:
        slot.call(segment, slot.client, SplitServer(CFG), data(3), 0, 4)
        weights = sum(v.nbytes for v in slot.client.modules_state().values())
    st = pool.stats()
    assert st.materialisations == 1 and st.clients == 50 and st.slots == 2
    # Its weights and a momentum buffer per trained parameter, nothing for the 49 others.
    assert weights < st.parked_bytes < 2.2 * weights
    s = summarise([st.to_dict(), None])
    assert s["clients"] == 50 and s["parked_bytes_per_client"] == pytest.approx(st.parked_bytes / 50)
    assert summarise([None]) is None
    pool.shutdown()


def test_a_splitfed_average_is_parked_by_reference():
    pool = ClientPool(lambda c: SplitClient(CFG, c), [0, 1, 2], slots=1, threads=1, seed=CFG.seed)
    avg = SplitClient(CFG, 0).modules_state()
    for c in (0, 1, 2):
        with pool.materialised(c, modules=pool.shared_state("epoch0", lambda ref: avg)) as slot:
            slot.call(slot.client.load_modules_state, avg)
    assert all(pool.parked[c].modules is avg for c in (0, 1, 2))
    assert pool.stats().parked_bytes == 0  # no momentum yet, modules shared
    pool.shutdown()


def test_slots_bound_the_clients_in_flight():
    pool = ClientPool(lambda c: SplitClient(CFG, c), list(range(8)), slots=2, threads=1, seed=CFG.seed)
    live, peak, lock = [0], [0], threading.Lock()

    def work(c):
        with pool.materialised(c):
            with lock:
                live[0] += 1
                peak[0] = max(peak[0], live[0])
            time.sleep(0.02)
            with lock:
                live[0] -= 1

    ts = [threading.Thread(target=work, args=(c,)) for c in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert peak[0] == 2
    assert pool.stats().materialisations == 8
    pool.shutdown()


def test_a_failed_directive_parks_nothing_and_frees_its_slot():
    pool = ClientPool(lambda c: SplitClient(CFG, c), [0, 1], slots=1, threads=1, seed=CFG.seed)
    with pytest.raises(RuntimeError, match="boom"):
        with pool.materialised(0) as slot:
            slot.client.forward(data(0).x[:4], data(0).y[:4])  # a step left pending
            raise RuntimeError("boom")
    assert 0 not in pool.parked
    with pool.materialised(1) as slot:  # the slot is free again, with no step pending
        assert slot.client._pending is None and slot.client.client_id == 1
    with pytest.raises(KeyError, match="client 5 is not hosted here"):
        with pool.materialised(5):
            pass
    pool.shutdown()


def test_config_checks_materialise():
    assert ClusterConfig(materialise=2).materialise == 2
    assert ClusterConfig().materialise == "all"
    for bad in (0, "some", 1.5):
        with pytest.raises(ValueError, match="materialise must be 'all' or an integer >= 1"):
            ClusterConfig(materialise=bad)
    with pytest.raises(ValueError, match=r"slots must be in 1\.\.2"):
        ClientPool(lambda c: SplitClient(CFG, c), [0, 1], slots=3, threads=1, seed=0)


# -- on the cluster ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def per_client(run_dir):
    import pyarrow.parquet as pq

    steps = pq.read_table(run_dir / "steps.parquet").to_pandas().sort_values(["client", "epoch", "batch"])
    evals = pq.read_table(run_dir / "evals.parquet").to_pandas().sort_values(["client", "epoch"])
    return steps, evals


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["splitfed"])  # independent: in-process below (CI time)
def test_virtual_clients_give_the_materialised_runs_per_client_results(local_ray, tmp_path, mode):
    from raysplit.config import TrainConfig
    from raysplit.runtime.driver import run_cluster

    def run(name, materialise):
        tc = TrainConfig(method="deprune", split=SplitConfig(model="vgg_small", torch_threads=1, seed=3),
                         dataset="digits", image_size=16, budgets=(4, 128), epochs_per_budget=(1, 1), batch_size=32,
                         max_batches=3, test_subset=64, out=str(tmp_path / name), progress=False)
        # One shard per client: each client's arithmetic is then independent of the order in
        # which the clients' steps reach the shards, so the two runs can be compared exactly.
        cc = ClusterConfig(train=tc, clients=4, shards=4, clients_per_actor=4, materialise=materialise, mode=mode)
        summary, _ = run_cluster(cc)
        return summary, *per_client(tmp_path / name)

    s_all, steps_all, evals_all = run("all", "all")
    s_virt, steps_virt, evals_virt = run("virtual", 1)
    assert s_all.virtual is None
    assert s_virt.virtual["slots"] == 1 and s_virt.virtual["clients"] == 4
    # 4 clients x (2 training epochs + 2 evaluations [+ 2 aggregations]) + one result each
    assert s_virt.virtual["materialisations"] == 4 * (4 + 2 * (mode == "splitfed")) + 4
    assert not s_virt.failed_clients and not s_all.failed_clients
    key = ["client", "epoch", "batch", "step", "budget", "samples", "bytes_up", "bytes_down", "correct"]
    assert steps_virt[key].values.tolist() == steps_all[key].values.tolist()
    np.testing.assert_allclose(steps_virt["loss"].values, steps_all["loss"].values, rtol=1e-5, atol=1e-6)
    ekey = ["client", "epoch", "correct", "total", "bytes_up"]
    assert evals_virt[ekey].values.tolist() == evals_all[ekey].values.tolist()
    assert s_virt.bytes_up == s_all.bytes_up and s_virt.final_test_accuracy == s_all.final_test_accuracy


@pytest.mark.slow
def test_a_virtual_run_with_participant_selection_trains_each_rounds_clients(local_ray, tmp_path):
    from raysplit.config import TrainConfig
    from raysplit.runtime.driver import run_cluster

    tc = TrainConfig(method="deprune", split=SplitConfig(model="vgg_small", torch_threads=1, seed=5), dataset="digits",
                     image_size=16, budgets=(4, 128), epochs_per_budget=(2, 1), batch_size=32, max_batches=2,
                     test_subset=64, out=str(tmp_path / "sel"), progress=False)
    cc = ClusterConfig(train=tc, clients=12, clients_per_actor=6, materialise=2, mode="splitfed",
                       clients_per_round=0.25, availability="markov:3,1")
    summary, _ = run_cluster(cc)
    steps, evals = per_client(tmp_path / "sel")
    sel = cc.selection()
    for e in range(3):
        want = set(sel.participants(e, range(12)))
        assert len(want) == 3
        assert set(steps[steps.epoch == e].client) == want
        assert set(evals[evals.epoch == e].client) == want
    assert summary.epochs == 3 and not summary.failed_clients
    assert [t["to_budget"] for t in summary.transitions] == [128]
    assert summary.virtual["slots"] == 4 and summary.virtual["clients"] == 12


# -- the loop, in-process (no Ray): run_virtual against ClientLoop.run ----------------------

class ThreadScheduler:
    """The scheduler's core shared by client threads (what the scheduler actor does)."""

    def __init__(self, core) -> None:
        self.core, self.cv = core, threading.Condition()

    def next(self, client, report):
        from raysplit.budget.policies import WAIT

        with self.cv:
            self.core.report(client, report)  # averages stay dicts in-process
            self.cv.notify_all()
            while (d := self.core.decide(client)) is WAIT:
                self.cv.wait()
            return d


class Rows(list):
    def put(self, items):
        self.extend(items)


def run_loops(ids, virtual: bool, mode: str, link: bool = False):
    """Run ``ids`` through a 2-epoch sync schedule on threads (one slot shared by all when
    ``virtual``); with ``link``, behind one shared cell under the virtual clock."""
    from raysplit.budget.policies import make_policy
    from raysplit.identity import Identity
    from raysplit.runtime.coordinator import Coordinator
    from raysplit.runtime.virtual import run_virtual
    from raysplit.training.loop import ClientLoop
    from raysplit.training.methods import make_plan

    plan = make_plan("deprune", (4, 16), (1, 1), lr=0.05, gamma=2, lk=1, channels=SplitClient(CFG).channels)
    steps = {c: 2 for c in ids}
    core = Coordinator(make_policy("sync", plan, steps, aggregate=mode == "splitfed"), plan, {c: 96.0 for c in ids})
    sink, port, compute = Rows(), None, None
    if link:
        from raysplit.link.compute import ComputeModel, split_flops
        from raysplit.link.medium import Medium
        from raysplit.link.port import LocalPort
        from raysplit.link.spec import CellSpec, LinkSpec

        spec = LinkSpec(up_bps=20e6, down_bps=20e6, delay_s=0.005, cell="air")
        cell = CellSpec("air", 4e6, 4e6, "half")
        port = LocalPort(Medium(dict.fromkeys(ids, spec), dict.fromkeys(ids, 0), {"air": cell}))
        compute = ComputeModel("model", flops=split_flops(CFG))
    sched = ClockScheduler(core, port) if link else ThreadScheduler(core)
    pool = ClientPool(lambda c: SplitClient(CFG, c), ids, slots=1, threads=1, seed=CFG.seed) if virtual else None

    def transport(c):
        t = InProcessTransport(SplitServer(CFG, 0, plan=plan))
        return EmulatedTransport(t, port, c, mode="virtual", compute=compute) if link else t

    loops = {c: ClientLoop(client=None if virtual else SplitClient(CFG, c), train=data(c), test=data(100 + c), plan=plan,
                           transport=transport(c), scheduler=sched, sink=sink,
                           identity=Identity("r", "t"), shard=0, batch_size=32, seed=CFG.seed, t0=0.0)
             for c in ids}
    results = {}

    def go(c):
        results[c] = run_virtual(pool, loops[c], c, settle_off_slot=link) if virtual else loops[c].run()

    ts = [threading.Thread(target=go, args=(c,)) for c in ids]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert set(results) == set(ids)
    if pool is not None:
        pool.shutdown()
    return results, sink


@pytest.mark.parametrize("mode", ["independent", "splitfed"])
def test_run_virtual_walks_the_schedule_like_the_materialised_loop(mode):
    from raysplit.records.rows import EvalRow, StepRow

    ids = [0, 1, 2]
    got, rows_v = run_loops(ids, True, mode)
    want, rows_m = run_loops(ids, False, mode)

    def table(rows, kind):
        if kind is StepRow:
            return sorted((r.client, r.epoch, r.batch, r.step, r.budget, r.bytes_up, r.bytes_down, r.loss)
                          for r in rows if isinstance(r, StepRow))
        return sorted((r.client, r.epoch, r.correct, r.total, r.bytes_up) for r in rows if isinstance(r, EvalRow))

    assert table(rows_v, StepRow) == table(rows_m, StepRow) and len(table(rows_m, StepRow)) == 3 * 2 * 2
    assert table(rows_v, EvalRow) == table(rows_m, EvalRow) and len(table(rows_m, EvalRow)) == 3 * 2
    for c in ids:
        assert got[c].steps == want[c].steps == 4 and got[c].final_filter == want[c].final_filter


class ClockScheduler(ThreadScheduler):
    """ThreadScheduler that keeps the emulated network informed, as the scheduler actor
    does: a client waiting at a barrier is held, a barrier passed releases its clients."""

    def __init__(self, core, port) -> None:
        super().__init__(core)
        self.port = port

    def next(self, client, report):
        from raysplit.budget.policies import WAIT
        from raysplit.runtime.coordinator import AlignClocks

        with self.cv:
            for a in self.core.report(client, report):
                if isinstance(a, AlignClocks):
                    self.port.release(list(a.clients), a.time)
            self.cv.notify_all()
            held = False
            while (d := self.core.decide(client)) is WAIT:
                if not held:
                    held = True
                    self.port.hold(client)
                self.cv.wait()
            return d


@pytest.mark.parametrize("mode", ["independent", "splitfed"])
def test_virtual_clients_under_the_virtual_clock_give_the_timings_of_materialised_ones(mode):
    """Three clients on ONE slot behind one shared cell under the virtual clock: each step
    settles with no slot held (a client waiting for the slot is one the clock waits for),
    and the run gives the materialised run's rows, simulated timings included."""
    from raysplit.records.rows import EvalRow, StepRow

    ids = [0, 1, 2]
    got, rows_v = run_loops(ids, True, mode, link=True)
    want, rows_m = run_loops(ids, False, mode, link=True)
    sim = ("sim_time", "uplink_s", "downlink_s", "wire_bytes_up", "wire_bytes_down")

    def steps(rows):
        return sorted((r.client, r.epoch, r.batch, r.step, r.budget, r.bytes_up, r.bytes_down, r.loss,
                       *(getattr(r, k) for k in sim)) for r in rows if isinstance(r, StepRow))

    v, m = steps(rows_v), steps(rows_m)
    assert len(m) == 3 * 2 * 2 and [r[:7] for r in v] == [r[:7] for r in m]
    assert np.allclose([r[7:] for r in v], [r[7:] for r in m], rtol=1e-5, atol=1e-9)
    assert all(r[8] > 0 for r in v)  # the clock moved: the steps were settled on the medium
    # the cell is shared: steps of equal size crossed it at different speeds (overlaps)
    assert len({round(r[9], 9) for r in v}) > 1
    evals = sorted((r.client, r.epoch, r.correct, r.total) for r in rows_v if isinstance(r, EvalRow))
    assert evals == sorted((r.client, r.epoch, r.correct, r.total) for r in rows_m if isinstance(r, EvalRow))
    for c in ids:
        assert got[c].steps == want[c].steps == 4


@pytest.mark.slow
def test_virtual_clients_on_the_cluster_under_the_virtual_clock_match_materialised_ones(local_ray, tmp_path):
    """--materialise 1 with --link-mode virtual on the cluster (medium actor, scheduler
    holds): the run completes with the materialised run's rows and simulated timings."""
    from raysplit.config import TrainConfig
    from raysplit.config.link import LinkConfig
    from raysplit.runtime.driver import run_cluster

    def run(name, materialise):
        tc = TrainConfig(method="deprune", split=SplitConfig(model="vgg_small", torch_threads=1, seed=3),
                         dataset="digits", image_size=16, budgets=(4, 128), epochs_per_budget=(1, 1), batch_size=32,
                         max_batches=2, test_subset=64, out=str(tmp_path / name), progress=False,
                         link=LinkConfig(link="wifi", link_mode="virtual"))
        cc = ClusterConfig(train=tc, clients=4, shards=4, clients_per_actor=4, materialise=materialise)
        summary, _ = run_cluster(cc)
        return summary, *per_client(tmp_path / name)

    s_all, steps_all, _ = run("all", "all")
    s_virt, steps_virt, _ = run("virtual", 1)
    assert s_virt.virtual["slots"] == 1 and not s_virt.failed_clients and not s_all.failed_clients
    key = ["client", "epoch", "batch", "step", "budget", "bytes_up", "bytes_down", "wire_bytes_up", "wire_bytes_down"]
    assert len(steps_virt) == 4 * 2 * 2 and steps_virt[key].values.tolist() == steps_all[key].values.tolist()
    assert (steps_virt["sim_time"] > 0).all()
    sim = ["sim_time", "uplink_s", "downlink_s"]
    np.testing.assert_allclose(steps_virt[sim].values, steps_all[sim].values, rtol=1e-6)
