"""The energy model of the energy-aware split (raysplit.energy): every term on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from raysplit import codec
from raysplit.config.energy import EnergyConfig, EnergySplitConfig
from raysplit.energy.choice import CutPlanner, choose_cut, layer_cuts, policy_cut
from raysplit.energy.costs import HardwareCosts
from raysplit.energy.energy import Radio, co2_kg, computation_energy, cut_energies, memory_energy
from raysplit.energy.profile import profile_model
from raysplit.energy.simulate import Draws, simulate
from raysplit.energy.sparsify import compression_ratio, l1_norm, prune, sparsified_loss
from raysplit.energy.uplink import Uplink
from raysplit.energy.wire import message_bits
from raysplit.link.channel import BlockFading, transmit_seconds, transmit_seconds_many
from raysplit.models.whole import whole_model

# -- Tables I and II, eq. 1 and 2 -----------------------------------------------------


def test_operation_and_memory_costs_are_tables_i_and_ii():
    f32 = HardwareCosts()
    assert (f32.add_j, f32.mul_j) == pytest.approx((0.9e-12, 3.7e-12))
    assert HardwareCosts("int8").mul_j == pytest.approx(0.2e-12)
    # A float32 element is half of a 64-bit access: DRAM 2.6 nJ -> 1.3 nJ per weight.
    assert f32.element_j == pytest.approx(1.3e-9)
    assert HardwareCosts("float16", "8kb").element_j == pytest.approx(10e-12 * 16 / 64)
    assert HardwareCosts(dram_pj=1300).element_j == pytest.approx(0.65e-9)
    with pytest.raises(ValueError, match="unknown arithmetic 'float64'; Table I has int8, float16, int32, float32"):
        HardwareCosts("float64")
    with pytest.raises(ValueError, match="dram_pj 100 outside Table II's DRAM range 1300-2600"):
        HardwareCosts(dram_pj=100)


def test_computation_and_memory_energy_eq_1_and_2():
    c = HardwareCosts()
    assert computation_energy(1000, 2000, c) == pytest.approx(1000 * 3.7e-12 + 2000 * 0.9e-12)
    assert memory_energy(416, c) == pytest.approx(416 * 1.3e-9)
    with pytest.raises(ValueError):
        computation_energy(-1, 0, c)


def test_co2_with_the_eu_carbon_index():
    assert co2_kg(3.6e6) == pytest.approx(0.275)  # 1 kWh
    assert co2_kg(8.66e-4) == pytest.approx(0.66e-10, rel=0.01)  # the paper's pool-1 at 15 kHz
    assert co2_kg(3.6e6, 0.5) == pytest.approx(0.5)


# -- eq. 3-5 ----------------------------------------------------------------------------


def test_radio_rate_snr_and_path_loss():
    r = Radio(15e3)
    assert r.mean_snr == pytest.approx(1e-3 / (1e-9 * 15e3))  # 66.7
    assert r.rates([1.0])[0] == pytest.approx(15e3 * math.log2(1 + 200 / 3))
    # 10 dB of path loss is a tenth of the receive power.
    assert Radio(5e6, path_loss_db=10).rates([2.0])[0] == pytest.approx(Radio(5e6).rates([0.2])[0])
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        Radio(0)


def test_cut_energies_hand_computed():
    # Two cuts over two 1 s blocks of 1000 bit/s at P = 1 mW: 1500 bits take 1.5 s (1.5 mJ), 100 bits 0.1 s.
    en = cut_energies([0.0, 1e-6], [0.0, 2e-6], [1500, 100], [1000, 1000], 1.0, 1e-3)
    assert en.seconds == pytest.approx([1.5, 0.1])
    assert en.transmit == pytest.approx([1.5e-3, 1e-4])
    assert en.processing == pytest.approx([0.0, 3e-6])
    assert en.total == pytest.approx([1.5e-3, 1e-4 + 3e-6])


def test_transmit_seconds_many_matches_the_scalar_eq_4():
    rng = np.random.default_rng(0)
    for _ in range(300):
        r = rng.exponential(1000, rng.integers(1, 12))
        r[rng.random(len(r)) < 0.25] = 0.0  # deep fades
        bits = rng.uniform(0, r.sum() * 0.05 * 0.999, 6)
        bits[0] = 0.0
        np.testing.assert_allclose(transmit_seconds_many(bits, r, 0.05), [transmit_seconds(b, r, 0.05) for b in bits],
                                   rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="do not fit in 2 blocks"):
        transmit_seconds_many([1e9], [1, 2], 0.1)


def test_uplink_grows_its_horizon_until_the_bits_fit():
    up = Uplink(Radio(15e3), BlockFading("rayleigh", 0.01, seed=3))
    rates = up.rates_for(4e5, 100)  # 400 kbit at ~91 kbit/s mean: about 4.4 s of 10 ms blocks
    assert rates.sum() * 0.01 >= 4e5 and len(rates) > 200
    np.testing.assert_allclose(rates[:5], Radio(15e3).rates(up.gains(100, 5)))
    dead = Uplink(Radio(5e6, path_loss_db=400), BlockFading("none", 1.0))
    with pytest.raises(ValueError, match="the channel is too poor"):
        dead.rates_for(1e6, 0)


# -- what a cut sends ---------------------------------------------------------------------


def test_bits_per_element_follow_the_codec():
    shape = (1, 16, 14, 14)
    assert message_bits(shape, 16, "float32") == 16 * 196 * 32  # the paper's 32 bits per element
    assert message_bits(shape, 16, "float16") == 16 * 196 * 16
    assert message_bits(shape, 10, "int8") == 10 * 196 * 8 + 10 * 32  # + one float32 scale per sent channel
    for enc in ("float32", "float16", "int8"):
        x = np.random.default_rng(0).standard_normal((3, 4, 5, 5)).astype(np.float32)
        buf = codec.encode(x, np.array([0, 2, 5, 7]), (3, 8, 5, 5), enc)
        assert message_bits((3, 8, 5, 5), 4, enc, "message") == 8 * len(buf)
    with pytest.raises(ValueError, match="size before it is sent, and zstd's depends on the data"):
        message_bits(shape, 16, "int8+zstd")


# -- counting operations, memory and sent units -------------------------------------------


def _tiny():
    """conv 1->3 (3x3, pad 1) + ReLU | 2x2 max-pool (ceil) | flatten + fc 12->3, on 1x3x3.

    Channel 0 is live; channel 1 has no weight (a constant); channel 2 depends on the
    input but no fc weight reads it. fc row 0 reads only channel 1 (a constant), row 1
    reads channel 0, row 2 has only a bias."""
    conv = nn.Conv2d(1, 3, 3, padding=1)
    fc = nn.Linear(12, 3)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, :2, :2] = 1.0  # 4 non-zero weights
        conv.weight[2, 0, 1, 1] = 1.0  # 1
        conv.bias.copy_(torch.tensor([0.5, 0.0, 0.0]))
        fc.weight.zero_()
        fc.weight[0, 4:8] = 1.0  # channel 1's four positions
        fc.weight[1, 0:4] = 2.0  # channel 0's
        fc.bias.copy_(torch.tensor([0.0, 0.0, 0.5]))
    return [nn.Sequential(conv, nn.ReLU()), nn.MaxPool2d(2, 2, ceil_mode=True), nn.Sequential(nn.Flatten(), fc)]


def test_profile_counts_by_hand():
    p = profile_model("tiny", _tiny(), (1, 3, 3))
    conv, pool, fc = p.layers
    assert [lay.name for lay in p.layers] == ["conv1", "pool1", "fc1"]
    # conv: 9 outputs x (4 + 1) multiplications; additions 9 x (4 - 1 + bias) + 9 x (1 - 1); ReLU 27 comparisons.
    assert (conv.mults, conv.adds, conv.params, conv.dense_params) == (45, 36 + 27, 6, 30)
    # ceil-mode 2x2 pool of 3x3: windows of 4, 2, 2, 1 elements: 9 - 4 = 5 comparisons per channel.
    assert (pool.mults, pool.adds, pool.params, pool.shape) == (0, 15, 0, (3, 2, 2))
    # fc: row 0 four weights, row 1 four, row 2 none; biases of row 2.
    assert (fc.mults, fc.adds, fc.params) == (8, 3 + 3 + 0, 9)
    # Sent: channel 0 only (1 is constant, 2 unused); of the scores only row 1 depends on the input.
    assert p.input_sent == (0,) and conv.sent == (0,) and pool.sent == (0,) and fc.sent == (1,)
    assert [p.elements_at(c) for c in p.cuts] == [9, 9, 4, 1]
    e_c, e_m = p.processing(HardwareCosts())
    assert e_c[-1] == pytest.approx((45 + 8) * 3.7e-12 + (63 + 15 + 6) * 0.9e-12)
    assert e_m[-1] == pytest.approx((6 + 9) * 1.3e-9) and e_m[0] == 0.0


def test_profile_refuses_a_layer_it_cannot_count():
    with pytest.raises(ValueError, match="no operation count for layer type GELU"):
        profile_model("odd", [nn.Sequential(nn.Flatten(), nn.GELU())], (1, 2, 2))


def test_job_refuses_a_model_it_cannot_count_before_training():
    from raysplit.energy.run import check_countable

    with pytest.raises(ValueError, match="--model resnet18: energy profile: no operation count for layer type "
                                         "BasicBlock; supported"):
        check_countable("resnet18", (3, 32, 32), 10)
    check_countable("vgg_small", (3, 32, 32), 10)


def test_mnist_cnn_is_the_papers():
    m = whole_model("mnist_cnn", (1, 28, 28), 10, seed=0)
    assert m.depth == 13
    assert m.shapes[2] == (16, 14, 14) and m.shapes[8] == (64, 2, 2) and m.shapes[13] == (10,)
    p = profile_model("mnist_cnn", m.layers, (1, 28, 28))
    assert p.names()[2] == "pool1" and p.names()[-1] == "fc5"
    assert p.dense_params == p.params == 433_274
    fc12 = p.layers[8].dense_params + p.layers[9].dense_params
    assert fc12 / p.dense_params == pytest.approx(0.607, abs=0.001)  # the paper: "around 60 %"
    assert p.layers[0].mults == 28 * 28 * 16 * 25
    assert [p.elements_at(c) for c in (0, 2, 13)] == [784, 3136, 10]


# -- the choice ---------------------------------------------------------------------------


def test_choice_is_the_argmin():
    assert choose_cut([5.0, 3.0, 4.0, 3.0]) == 1  # ties go to the earlier cut
    assert choose_cut([5.0, 3.0, 4.0, 1.0], allowed=[0, 2]) == 2
    with pytest.raises(ValueError, match="allowed cuts"):
        choose_cut([1.0, 2.0], allowed=[5])


def test_policies_on_known_energies():
    m = whole_model("mnist_cnn", (1, 28, 28), 10, seed=0)
    prof = profile_model("mnist_cnn", m.layers, (1, 28, 28))
    planner = CutPlanner(prof, HardwareCosts(), "float32", "payload", 1e-3, 0.01)
    en = planner.energies(1, Radio(5e6).rates(np.ones(200)))
    # PS picks among the layers 1..L (the paper's l in {1..L}); with the input allowed, among 0..L.
    assert policy_cut("ps", prof, en) == 1 + int(np.argmin(en.total[1:]))
    assert policy_cut("ps", prof, en, layer_cuts(13, with_input=True)) == int(np.argmin(en.total))
    assert en.total[0] < en.total[1:].min()  # at 5 MHz the raw image is the cheapest message of all
    assert [policy_cut(p, prof, en) for p in ("pool-1", "softmax", "input")] == [2, 13, 0]
    # Cut 0 costs no processing and 784 x 32 bits at the |h|^2 = 1 rate.
    assert en.processing[0] == 0.0
    assert en.transmit[0] == pytest.approx(1e-3 * 784 * 32 / (5e6 * math.log2(1.2)))
    assert en.processing[13] == pytest.approx(sum(r["processing_j"] for r in prof.layer_table(HardwareCosts())))
    with pytest.raises(ValueError, match="unknown policy 'greedy'"):
        policy_cut("greedy", prof, en)


def test_table_iii_without_fading_by_formula():
    m = whole_model("mnist_cnn", (1, 28, 28), 10, seed=0)
    dense = profile_model("mnist_cnn", m.layers, (1, 28, 28))
    with torch.no_grad():
        for p in m.layers.parameters():
            p[torch.rand_like(p) < 0.95] = 0.0
    sparse = profile_model("mnist_cnn", m.layers, (1, 28, 28))
    c = HardwareCosts()
    planners = {"compressed": CutPlanner(sparse, c, "float32", "payload", 1e-3, 0.01),
                "original": CutPlanner(dense, c, "float32", "payload", 1e-3, 0.01)}
    radio = Radio(15e3)
    res = {r.method: r for r in simulate(planners, radio, Draws(count=5, fading="none"), 0.275)}
    rate = radio.rates([1.0])[0]
    e_c, e_m = sparse.processing(c)
    pool1 = e_c[2] + e_m[2] + 1e-3 * sparse.elements_at(2) * 32 / rate
    assert res["pool-1"].energy_j == pytest.approx(pool1)
    assert res["pool-1"].transmit_j == pytest.approx(1e-3 * sparse.elements_at(2) * 32 / rate)
    every = e_c + e_m + 1e-3 * np.array([sparse.elements_at(k) * 32 for k in sparse.cuts]) / rate
    assert res["PS"].energy_j == pytest.approx(every[1:].min()) and res["PS"].cuts == {1 + int(every[1:].argmin()): 5}
    assert res["input"].energy_j == pytest.approx(every[0]) and res["input"].processing_j == 0.0
    assert res["PS"].energy_j <= min(res["pool-1"].energy_j, res["softmax"].energy_j)
    assert res["PSNC"].energy_j >= res["PS"].energy_j  # the dense model costs more at every cut
    assert res["softmax"].co2_kg == pytest.approx(co2_kg(res["softmax"].energy_j))


# -- eq. 10 and pruning ---------------------------------------------------------------------


def test_l1_sparsification_and_pruning():
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -0.001]]))
        lin.bias.fill_(-0.25)
    assert float(l1_norm(lin).detach()) == pytest.approx(0.751)
    task = torch.tensor(2.0)
    assert float(sparsified_loss(task, lin, 0.9999).detach()) == pytest.approx(0.9999 * 2 + 1e-4 * 0.751)
    assert float(sparsified_loss(task, lin, 1.0)) == 2.0
    state = {k: v.detach().numpy().copy() for k, v in lin.state_dict().items()}
    pruned = prune(state, 0.01)
    assert pruned["weight"].tolist() == [[0.5, 0.0]] and pruned["bias"].tolist() == [-0.25]
    assert compression_ratio(state, pruned) == pytest.approx(3 / 2)
    with pytest.raises(ValueError, match="mu must be in"):
        sparsified_loss(task, lin, 0.0)


# -- configuration -------------------------------------------------------------------------


def test_energy_config_checks_its_values():
    e = EnergyConfig()
    assert e.interval_blocks == 100 and e.radio(15e3).mean_snr == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="whole number of fading blocks"):
        EnergyConfig(interval_s=0.015)
    with pytest.raises(ValueError, match="unknown fading"):
        EnergyConfig(fading="nakagami")
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        EnergyConfig(bandwidths=(15e3, -1.0))
    with pytest.raises(ValueError, match="zstd's depends on the data"):
        EnergySplitConfig(codec="float32+zstd")
    with pytest.raises(ValueError, match="shards must be in 1..clients"):
        EnergySplitConfig(clients=2, shards=3)
    assert EnergySplitConfig().mu == pytest.approx(0.9999)


def test_job_rejects_bad_options_clearly(capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "jobs"))
    from energy_split import config_from_argv, parser

    for argv, msg in ((["--codec", "int8+zstd"], "zstd's depends on the data"),
                      (["--interval-s", "0.015"], "whole number of fading blocks"),
                      (["--policy", "greedy"], "--policy: 'greedy' is not one of: ps, pool-1, softmax, input"),
                      (["--clients", "2", "--shards", "3"], "shards must be in 1..clients (2), got 3")):
        with pytest.raises(SystemExit) as e:
            config_from_argv(parser(), argv)
        assert e.value.code == 2 and msg in capsys.readouterr().err
    cfg = config_from_argv(parser(), ["--bandwidth", "15e3", "--fading", "rician", "--send-input"])
    assert cfg.energy.bandwidth == 15e3 and cfg.energy.fading == "rician" and cfg.energy.send_input
