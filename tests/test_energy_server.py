"""The cut layer on the wire and a server that starts from any cut (the energy-aware split)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raysplit import codec
from raysplit.config.split import SplitConfig
from raysplit.energy.choice import CutPlanner
from raysplit.energy.client import EnergyClient
from raysplit.energy.costs import HardwareCosts
from raysplit.energy.energy import Radio
from raysplit.energy.profile import profile_model
from raysplit.energy.run import server_state
from raysplit.energy.uplink import Uplink
from raysplit.identity import Identity
from raysplit.link.channel import BlockFading
from raysplit.models.whole import whole_model
from raysplit.training.server import SplitServer
from raysplit.transport.inprocess import InProcessTransport

SHAPE = (1, 28, 28)
ID = Identity("r", "t")


def pruned_model(seed=0, keep=0.3):
    """The MNIST CNN with most weights zeroed and whole units killed, so cuts leave units out."""
    m = whole_model("mnist_cnn", SHAPE, 10, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.layers.parameters():
            p[torch.rand(p.shape, generator=g) > keep] = 0.0
        m.layers[2][0].weight[3:6] = 0.0  # conv2's channels 3-5 read nothing (constant: ReLU(bias))
        m.layers[2][0].bias[3] = 0.7
        m.layers[8][2].weight[:, 0:8] = 0.0  # fc1 reads nothing of pool4's channels 0-1
    m.layers.eval()
    return m


def server_for(m, cuts):
    cfg = SplitConfig(model="mnist_cnn", input_shape=SHAPE, num_classes=10, use_module=False)
    s = SplitServer(cfg, cuts=cuts, tenant_key=ID.tenant_key)
    s.load_modules_state(server_state({k: v.detach().numpy().copy() for k, v in m.layers.state_dict().items()}))
    return s


def client_for(m, policy="ps", bandwidth=5e6):
    prof = profile_model("mnist_cnn", m.layers, SHAPE)
    planner = CutPlanner(prof, HardwareCosts(), "float32", "message", 1e-3, 0.01)
    return EnergyClient(m, planner, planner, Uplink(Radio(bandwidth), BlockFading("rayleigh", 0.01, seed=1)),
                        policy=policy, interval_blocks=100, carbon_index=0.275, client_id=3, identity=ID)


@pytest.mark.parametrize("cut", [0, 1, 2, 7, 13, 65535])
def test_cut_layer_round_trips_in_the_header(cut):
    x = np.ones((2, 3), np.float32)
    msg = codec.decode(codec.encode(x, None, (2, 3), "float32", cut=cut, tenant=7, client_id=3))
    assert msg.cut == cut and msg.version == codec.FORMAT_VERSION and msg.tenant == 7
    with pytest.raises(codec.CodecError, match="cut 65536 out of range; allowed: 0..65535"):
        codec.encode(x, None, (2, 3), "float32", cut=65536)


def test_whole_model_server_starts_from_every_cut():
    m = pruned_model()
    client, server = client_for(m), server_for(m, range(14))
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(2)).numpy()
    with torch.no_grad():
        ref = m.layers(torch.from_numpy(x))
    prof = client.planner.profile
    assert len(prof.sent_at(4)) < 32 and 5 not in prof.sent_at(3) and 0 not in prof.sent_at(8)  # units left out
    for cut in range(14):
        buf = client.encode(x, cut, step=cut)
        msg = codec.decode(buf)
        assert msg.cut == cut and tuple(msg.indices) == prof.sent_at(cut)
        assert 8 * len(buf) == client.planner.bits(2)[cut]  # the energy model counts the real message
        (pred,) = server.predict([buf])
        np.testing.assert_array_equal(pred, ref.argmax(1).numpy())
        # and the scores themselves: the tail run from the filled-in cut equals the whole model
        dense = server._dense_input(msg, torch.from_numpy(msg.values))
        np.testing.assert_allclose(server.whole.run(dense, cut, 13).detach().numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)


def test_client_infers_end_to_end_with_its_cut_choice():
    m = pruned_model(keep=0.1)
    client, server = client_for(m), server_for(m, range(14))
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(5)).numpy()
    with torch.no_grad():
        y = m.layers(torch.from_numpy(x)).argmax(1).numpy()
    rows = [client.infer(x, y, InProcessTransport(server))[1] for _ in range(20)]
    for r in rows:
        assert r.correct == 2 and r.bits == 8 * r.bytes_up
        assert r.energy_j == pytest.approx(r.processing_j + r.transmit_j)
        # PS is the argmin over all cuts, pool-1 and softmax among them
        assert r.energy_j <= r.pool1_processing_j + r.pool1_transmit_j + 1e-15
        assert r.energy_j <= r.softmax_processing_j + r.softmax_transmit_j + 1e-15
    assert [r.batch for r in rows] == list(range(20)) and rows[1].sim_time == pytest.approx(1.0)
    assert len({r.cut for r in rows}) > 1  # the channel moves the choice


def test_one_cut_server_still_refuses_other_cuts():
    cfg = SplitConfig(model="mnist_cnn", input_shape=SHAPE, num_classes=10, use_module=False, split_layer=2)
    server = SplitServer(cfg)
    x = np.zeros((1, 16, 14, 14), np.float32)
    ok = codec.encode(x, None, x.shape, "float32", cut=2)
    assert server.predict([ok])[0].shape == (1,)
    bad = codec.encode(np.zeros((1, 32, 14, 14), np.float32), None, (1, 32, 14, 14), "float32", cut=3)
    with pytest.raises(ValueError, match="was cut after layer 3; this shard runs from layer 2"):
        server.predict([bad])


def test_whole_model_server_refuses_a_cut_outside_its_set_and_a_wrong_shape():
    m = pruned_model()
    server = server_for(m, [0, 2, 13])
    x = np.zeros((1, 32, 14, 14), np.float32)
    with pytest.raises(ValueError, match="was cut after layer 3; this shard starts from cuts 0, 2, 13"):
        server.predict([codec.encode(x, None, x.shape, "float32", cut=3, tenant=ID.tenant_key)])
    with pytest.raises(ValueError, match=r"has shape \(32, 14, 14\), this shard expects \(16, 14, 14\) at cut 2"):
        server.predict([codec.encode(x, None, x.shape, "float32", cut=2, tenant=ID.tenant_key)])
    with pytest.raises(ValueError, match="cut 14 out of range for mnist_cnn: allowed 0..13"):
        server_for(m, [14])
    with pytest.raises(ValueError, match="without the compression module"):
        SplitServer(SplitConfig(model="mnist_cnn", input_shape=SHAPE, num_classes=10), cuts=[0])


def test_whole_model_server_trains_from_mixed_cuts():
    """One merged step with messages cut at 2 and at 9: each client gets the gradient of
    its own loss at its own cut, with the cut echoed in the gradient's header."""
    m = pruned_model(keep=1.0)
    server = server_for(m, range(14))
    gen = torch.Generator().manual_seed(0)
    x = [torch.randn(3, *SHAPE, generator=gen), torch.randn(2, *SHAPE, generator=gen)]
    labels = [np.array([1, 2, 3]), np.array([4, 5])]
    bufs, want = [], []
    for i, (cut, xi, yi) in enumerate(zip((2, 9), x, labels)):
        with torch.no_grad():
            rep = m.run(xi, 0, cut)
        leaf = rep.clone().requires_grad_(True)
        F.cross_entropy(m.run(leaf, cut, 13), torch.from_numpy(yi)).backward()
        want.append(leaf.grad.numpy())
        bufs.append(codec.encode(rep.numpy(), None, tuple(rep.shape), "float32", labels=yi, cut=cut, client_id=i,
                                 step=1, tenant=ID.tenant_key))
    results = server.train_step(bufs, lr=0.0)
    for res, w, cut in zip(results, want, (2, 9)):
        g = codec.decode(res.grad)
        assert g.cut == cut and g.kind == codec.KIND_GRADIENT
        np.testing.assert_allclose(g.values, w, rtol=1e-4, atol=1e-7)


def test_whole_model_server_takes_channels_in_any_order():
    m = pruned_model(keep=1.0)
    server = server_for(m, range(14))
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        rep, ref = m.run(x, 0, 2).numpy(), m.layers(x).argmax(1).numpy()
    order = np.random.default_rng(0).permutation(16)
    buf = codec.encode(np.ascontiguousarray(rep[:, order]), order, rep.shape, "float32", cut=2, tenant=ID.tenant_key)
    np.testing.assert_array_equal(server.predict([buf])[0], ref)
