"""The wireless channel (raysplit.link.channel): Shannon rate, block fading, eq. 4 and 5."""

import math

import numpy as np
import pytest

from raysplit.link.channel import BlockFading, shannon_rate, transmit_energy, transmit_seconds


def test_shannon_rate_known_values():
    # SNR 1 -> log2(2) = 1 bit/s/Hz; SNR 3 -> 2 bit/s/Hz; no signal -> 0.
    assert shannon_rate(1e6, 1e-3, 1.0, 1e-9) == pytest.approx(1e6)
    assert shannon_rate(5e6, 3e-3, 1.0, 1e-10) == pytest.approx(5e6 * math.log2(7))  # SNR 6
    assert shannon_rate(5e6, 1e-3, 3.0, 1e-10) == pytest.approx(5e6 * math.log2(7))  # the gain scales P
    assert shannon_rate(15e3, 1e-3, 0.0, 1e-9) == 0.0
    # The paper's setting: P = 1 mW, N0 = 1e-9 W/Hz, W = 15 kHz, |h|^2 = 1: SNR = 1e-3 / 1.5e-5 = 66.7.
    assert shannon_rate(15e3, 1e-3, 1.0, 1e-9) == pytest.approx(15e3 * math.log2(1 + 200 / 3))


@pytest.mark.parametrize("args,msg", [((0, 1, 1, 1), "bandwidth must be > 0"), ((1, -1, 1, 1), "power and gain"),
                                      ((1, 1, 1, 0), "N0 must be > 0")])
def test_shannon_rate_rejects_bad_values(args, msg):
    with pytest.raises(ValueError, match=msg):
        shannon_rate(*args)


def test_transmit_seconds_over_blocks():
    # 1000 bit/s for 1 s carries 1000 bits; 1500 bits need half of the next block at 1000 bit/s.
    assert transmit_seconds(1000, [1000, 1000], 1.0) == pytest.approx(1.0)
    assert transmit_seconds(1500, [1000, 1000], 1.0) == pytest.approx(1.5)
    # A dead block (deep fade) carries nothing and costs its whole length.
    assert transmit_seconds(500, [0, 1000], 0.5) == pytest.approx(1.0)
    assert transmit_seconds(0, [0], 1.0) == 0.0
    with pytest.raises(ValueError, match="do not fit in 2 blocks"):
        transmit_seconds(5000, [1000, 1000], 1.0)


def test_transmit_energy_is_power_times_time():
    assert transmit_energy(1e-3, 2.5) == pytest.approx(2.5e-3)
    with pytest.raises(ValueError):
        transmit_energy(-1, 1)


def test_rayleigh_gain_moments():
    g = BlockFading("rayleigh", seed=1).draw(200_000)
    # |h|^2 ~ Exp(1): mean 1, variance 1, P(g < x) = 1 - exp(-x).
    assert g.mean() == pytest.approx(1.0, abs=0.01)
    assert g.var() == pytest.approx(1.0, abs=0.03)
    assert (g < 0.5).mean() == pytest.approx(1 - math.exp(-0.5), abs=0.005)


def test_rician_gain_has_unit_mean_and_less_spread():
    k = 4.0
    g = BlockFading("rician", seed=2, k=k).draw(200_000)
    assert g.mean() == pytest.approx(1.0, abs=0.01)
    # Var|h|^2 = (1 + 2K) / (1 + K)^2 for unit mean power.
    assert g.var() == pytest.approx((1 + 2 * k) / (1 + k) ** 2, abs=0.01)
    assert np.all(BlockFading("none").draw(5) == 1.0)


def test_fading_blocks_hold_and_repeat_for_a_seed():
    a, b = BlockFading(block_s=0.1, seed=7), BlockFading(block_s=0.1, seed=7)
    assert a.gain_at(0.0) == a.gain_at(0.099)
    assert a.gain_at(0.1) != a.gain_at(0.0)
    assert [a.gain_at(t) for t in (0.35, 0.05, 1.2)] == [b.gain_at(t) for t in (0.35, 0.05, 1.2)]
    c = BlockFading(block_s=0.1, seed=7)
    c.load_state_dict(a.state_dict())
    assert c.gain_at(5.0) == a.gain_at(5.0)
    with pytest.raises(ValueError, match="unknown fading 'nakagami'"):
        BlockFading("nakagami")


def test_shannon_rates_and_block_gains_agree_with_the_scalar_forms():
    from raysplit.link.channel import shannon_rates

    g = np.array([0.0, 0.5, 1.0, 3.0])
    np.testing.assert_allclose(shannon_rates(5e6, 1e-3, g, 1e-9), [shannon_rate(5e6, 1e-3, x, 1e-9) for x in g])
    with pytest.raises(ValueError, match="gains must be >= 0"):
        shannon_rates(5e6, 1e-3, np.array([-1.0]), 1e-9)
    a, b = BlockFading(block_s=0.1, seed=4), BlockFading(block_s=0.1, seed=4)
    np.testing.assert_array_equal(a.block_gains(3, 4), [b.gain_at(0.1 * k + 0.05) for k in range(3, 7)])
    assert a.gain_at(0.0) == b.block_gains(0, 1)[0]
