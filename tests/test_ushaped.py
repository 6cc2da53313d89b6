"""U-shaped (label-private) training in-process: no label byte crosses, both paths are
compressed, it learns, and the local and cluster runs agree (the latter is slow)."""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from raysplit import codec, local
from raysplit.config import ClusterConfig, SplitConfig, TrainConfig
from raysplit.identity import tenant_key
from raysplit.keys import Keyring
from raysplit.training.guards import Refused
from raysplit.training.methods import make_plan
from raysplit.training.ushaped import UClient, UServer, build_u_network, client_half, server_half
from raysplit.transport.inprocess import InProcessTransport

CFG = SplitConfig(model="vgg_small", input_shape=(1, 16, 16), num_classes=10, torch_threads=1, seed=1, u_cut=8)


class Spy(InProcessTransport):
    """Every buffer that crosses, both ways."""

    def __init__(self, server):
        super().__init__(server)
        self.seen: list[bytes] = []

    def round_trip(self, up, *, lr, phase):
        reply = super().round_trip(up, lr=lr, phase=phase)
        self.seen += [up, reply.result.grad]
        return reply

    def predict(self, up):
        out = self.server.predict([up])[0]
        self.seen += [up, out]
        return out


def pair(budget=4):
    ring = Keyring(os.urandom(32), "t")
    plan = make_plan("deprune", (4, 128), (1, 1), lr=0.05, channels=128)
    c = UClient(CFG, 0, tenant_key=tenant_key("t"), key=ring.client_key(0))
    s = UServer(CFG, plan=plan, tenant_key=tenant_key("t"), keyring=ring)
    c.set_budget(budget)
    return c, s, ring


def test_no_label_byte_ever_crosses_and_the_server_refuses_labels():
    c, s, ring = pair()
    spy = Spy(s)
    rng = np.random.default_rng(0)
    y = rng.permutation(np.arange(10).repeat(4))[:32]  # a distinctive label sequence
    x = rng.standard_normal((32, 1, 16, 16)).astype(np.float32)
    for _ in range(3):
        ex, _, _ = c.exchange_step(spy, x, y, lr=0.05, phase=0)
        assert np.isfinite(ex.reply.result.loss)
    c.evaluate_on(spy, __import__("raysplit.data", fromlist=["ArrayDataset"]).ArrayDataset("d", x, y, 10), 16)
    assert len(spy.seen) == 3 * 4 + 2 * 2
    patterns = [y.astype("<i4").tobytes(), y.astype("<i8").tobytes(), y.astype(np.uint8).tobytes()]
    for buf in spy.seen:
        msg = codec.decode(buf, key=ring.client_key(0))
        assert msg.labels is None and not buf[8] & codec.FLAG_HAS_LABELS
        assert not any(p in buf for p in patterns)
    labelled = codec.encode(np.ones((32, 4, 4, 4), np.float32), np.arange(4), (32, 128, 4, 4), "float32", labels=y,
                            step=99, tenant=tenant_key("t"), cut=CFG.split_layer, key=ring.client_key(0))
    with pytest.raises(Refused, match="carries labels: a label-private"):
        s.train_step([labelled], 0.05)


def test_the_labels_do_not_change_what_goes_up():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 1, 16, 16)).astype(np.float32)
    ups = []
    for y in (np.zeros(16, np.int64), np.arange(16) % 10):
        c, s, _ = pair()
        spy = Spy(s)
        c.exchange_step(spy, x, y, lr=0.05, phase=0)
        ups.append(spy.seen[0])
    assert ups[0] == ups[1] or codec.decode(ups[0]).values.tobytes() == codec.decode(ups[1]).values.tobytes()


def test_both_paths_carry_the_budget_of_the_compression_module():
    net = build_u_network(CFG)
    assert net.up_wire == (128, 4, 4) and net.down_wire == (256, 1, 1)
    for budget, down in ((4, 8), (128, 256)):  # the same share of the middle's 256 channels
        c, s, ring = pair(budget)
        spy = Spy(s)
        rng = np.random.default_rng(2)
        c.exchange_step(spy, rng.standard_normal((8, 1, 16, 16)).astype(np.float32), np.arange(8), lr=0.05,
                        phase=0 if budget == 4 else 1)
        a1, a2, g2, g1 = (codec.decode(b, key=ring.client_key(0)) for b in spy.seen)
        assert (a1.values.shape[1], a2.values.shape[1]) == (budget, down)
        assert (g2.values.shape, g1.values.shape) == (a2.values.shape, a1.values.shape)
        assert (a1.kind, a2.kind, g2.kind, g1.kind) == (1, 1, 2, 2) and (a1.step, g2.step) == (1, 2)


def test_factories_and_config():
    assert isinstance(client_half(CFG), UClient) and isinstance(server_half(CFG), UServer)
    assert type(client_half(CFG.replace(u_cut=None))).__name__ == "SplitClient"
    with pytest.raises(ValueError, match="u_cut 3 must come after split_layer 4"):
        CFG.replace(u_cut=3)
    tc = TrainConfig(dataset="digits", out="/tmp/x", progress=False)
    assert ClusterConfig(train=tc, clients=2, mode="ushaped").train.split.u_cut == 8  # before the classifier
    with pytest.raises(ValueError, match="needs --mode ushaped"):
        ClusterConfig(train=tc.replace(split=tc.split.replace(u_cut=8)), clients=2)


def test_a_local_ushaped_run_learns_with_both_paths_compressed(tmp_path):
    out = tmp_path / "u"
    assert local.main(["--dataset", "digits", "--image-size", "16", "--batch-size", "32", "--max-batches", "20",
                       "--test-subset", "128", "--threads", "1", "--no-progress", "--budgets", "4,128",
                       "--epochs-per-budget", "2,1", "--u-cut", "8", "--lr", "0.05", "--out", str(out)]) == 0
    st = pq.read_table(out / "steps.parquet").to_pandas()
    ep = pq.read_table(out / "epochs.parquet").to_pandas()
    assert st.groupby("epoch")["loss"].mean().is_monotonic_decreasing
    assert ep["test_accuracy"].iloc[-1] > 0.3  # chance is 0.1; 46 % measured after these 60 steps
    small = st[st.budget == 4]["bytes_down"].median()
    assert small < 0.1 * st[st.budget == 128]["bytes_down"].median()  # B' = 8 of 256 on the way down


def test_a_local_ushaped_run_over_an_emulated_link(tmp_path):
    out = tmp_path / "ul"
    assert local.main(["--dataset", "digits", "--image-size", "16", "--batch-size", "16", "--max-batches", "6",
                       "--test-subset", "32", "--threads", "1", "--no-progress", "--budgets", "4,128",
                       "--epochs-per-budget", "1,1", "--u-cut", "8", "--link", "wifi", "--out", str(out)]) == 0
    st = pq.read_table(out / "steps.parquet").to_pandas()
    assert len(st) == 12 and (st["uplink_s"] > 0).all() and (st["downlink_s"] > 0).all()
    assert st["sim_time"].is_monotonic_increasing  # the emulated clock runs over both round trips
