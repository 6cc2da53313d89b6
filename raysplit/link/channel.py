"""A wireless channel: the Shannon rate over block fading (Krouka et al., eq. 3-5).

Pure functions and one small seeded process, shared by the edge emulation (a link whose
capacity fades) and the energy-aware split choice (the transmission energy of a cut).

* :func:`shannon_rate`: R = W·log2(1 + P|h|²/(N0·W)) in bit/s (eq. 3). P in watts, N0 in
  W/Hz (the power spectral density of the noise), W in Hz, |h|² the channel's power gain.
* :class:`BlockFading`: |h|² held constant for ``block_s`` seconds, then redrawn. Rayleigh
  fading (h ~ CN(0, 1), the paper's model) makes |h|² exponential with mean 1; Rician
  with K-factor k, and no fading (|h|² = 1), are the alternatives.
* :func:`shannon_rates`: the same for an array of gains.
* :func:`transmit_seconds`: the smallest τ with ∫₀^τ R(t) dt >= bits (eq. 4) over a
  piecewise-constant rate.
* :func:`transmit_seconds_many`: the same for several sizes over the same blocks at once.
* :func:`transmit_energy`: the energy of sending at constant power P for τ seconds, P·τ.
  The paper writes eq. 5 as E_tr = τ·∫₀^τ P(t) dt, which for constant P is P·τ² and has the
  unit J·s, not J; we read it as the integral of the power over the transmission,
  ∫₀^τ P(t) dt (= P·τ at constant power), the energy in joules.

Path loss is not modelled (the paper gives none): |h|² has mean 1, so P/(N0·W) is the
mean receive SNR. A caller that wants a distance can scale ``power_w`` by its path gain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FADING = ("rayleigh", "rician", "none")


def shannon_rate(bandwidth_hz: float, power_w: float, gain: float, noise_psd: float) -> float:
    """Capacity in bit/s of a channel with power gain ``gain`` (= |h|²), eq. 3."""
    if bandwidth_hz <= 0:
        raise ValueError(f"bandwidth must be > 0 Hz, got {bandwidth_hz}")
    if power_w < 0 or gain < 0:
        raise ValueError(f"power and gain must be >= 0, got power {power_w} W, gain {gain}")
    if noise_psd <= 0:
        raise ValueError(f"noise power spectral density N0 must be > 0 W/Hz, got {noise_psd}")
    return bandwidth_hz * math.log2(1.0 + power_w * gain / (noise_psd * bandwidth_hz))


def shannon_rates(bandwidth_hz: float, power_w: float, gains: np.ndarray, noise_psd: float) -> np.ndarray:
    """:func:`shannon_rate` for an array of power gains at once (eq. 3), bit/s."""
    g = np.asarray(gains, dtype=float)
    shannon_rate(bandwidth_hz, power_w, 1.0, noise_psd)  # checks W, P and N0
    if g.size and not g.min() >= 0:
        raise ValueError(f"gains must be >= 0, got {g.min()}")
    return bandwidth_hz * np.log2(1.0 + power_w * g / (noise_psd * bandwidth_hz))


def transmit_seconds(bits: float, rates: np.ndarray | list[float], block_s: float) -> float:
    """Seconds to send ``bits`` when the rate is ``rates[k]`` bit/s during block k (each
    ``block_s`` long), eq. 4. Raises if the blocks given cannot carry them."""
    if bits < 0:
        raise ValueError(f"bits must be >= 0, got {bits}")
    if block_s <= 0:
        raise ValueError(f"block length must be > 0 s, got {block_s}")
    left, t = float(bits), 0.0
    for r in rates:
        r = float(r)
        if r < 0:
            raise ValueError(f"rates must be >= 0 bit/s, got {r}")
        if left <= r * block_s:
            return t + (left / r if r > 0 else 0.0)
        left -= r * block_s
        t += block_s
    if left <= 0:
        return t
    raise ValueError(f"{bits:g} bits do not fit in {len(rates)} blocks of {block_s:g} s ({bits - left:g} sent)")


def transmit_seconds_many(bits: np.ndarray | list[float], rates: np.ndarray | list[float],
                          block_s: float) -> np.ndarray:
    """:func:`transmit_seconds` for each entry of ``bits`` over the same blocks (one pass
    over the cumulative capacity instead of one loop per size)."""
    want = np.asarray(bits, dtype=float)
    r = np.asarray(rates, dtype=float).ravel()
    if want.size and want.min() < 0:
        raise ValueError(f"bits must be >= 0, got {want.min()}")
    if block_s <= 0:
        raise ValueError(f"block length must be > 0 s, got {block_s}")
    if r.size and r.min() < 0:
        raise ValueError(f"rates must be >= 0 bit/s, got {r.min()}")
    carried = np.cumsum(r) * block_s  # bits sent by the end of each block
    k = np.searchsorted(carried, want, side="left")  # the block in which each size is complete
    # (a size equal to the whole capacity up to rounding fits)
    short = (k >= len(r)) & (want > 0) & (want > (carried[-1] if len(r) else 0.0) * (1 + 1e-12))
    if short.any():
        sent = carried[-1] if len(r) else 0.0
        raise ValueError(f"{want[short].max():g} bits do not fit in {len(r)} blocks of {block_s:g} s ({sent:g} sent)")
    k = np.minimum(k, max(len(r) - 1, 0))
    before = np.where(k > 0, carried[k - 1], 0.0) if len(r) else np.zeros_like(want)
    rate = r[k] if len(r) else np.zeros_like(want)
    part = np.divide(want - before, rate, out=np.zeros_like(want), where=rate > 0)
    return np.where(want > 0, k * block_s + part, 0.0)


def transmit_energy(power_w: float, seconds: float) -> float:
    """Joules spent sending at constant power ``power_w`` for ``seconds`` (eq. 5, read as
    the integral of the power; see the module docstring)."""
    if power_w < 0 or seconds < 0:
        raise ValueError(f"power and time must be >= 0, got {power_w} W for {seconds} s")
    return power_w * seconds


@dataclass
class BlockFading:
    """|h|² per block of ``block_s`` seconds, drawn from a private seeded generator.

    Args:
        kind: rayleigh (|h|² ~ Exp(1)), rician (K-factor ``k``, mean power 1), none (1).
        block_s: coherence time: the gain holds for this long.
        seed: the generator's seed; the same seed gives the same gains.
        k: Rician K-factor (power of the line-of-sight part over the scattered part).
    """

    kind: str = "rayleigh"
    block_s: float = 0.01
    seed: int = 0
    k: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in FADING:
            raise ValueError(f"unknown fading {self.kind!r}; choose one of {', '.join(FADING)}")
        if self.block_s <= 0:
            raise ValueError(f"fading block must be > 0 s, got {self.block_s}")
        if self.k < 0:
            raise ValueError(f"Rician K-factor must be >= 0, got {self.k}")
        self._rng = np.random.default_rng(self.seed)
        self._gains: list[float] = []

    def draw(self, n: int) -> np.ndarray:
        """The next ``n`` gains |h|² of this process (the process continues across calls)."""
        if self.kind == "none":
            return np.ones(n)
        if self.kind == "rayleigh":  # |h|², h ~ CN(0, 1)
            return self._rng.exponential(1.0, n)
        # Rician: h = sqrt(K/(K+1)) + sqrt(1/(K+1))·CN(0, 1), so E|h|² = 1.
        los = math.sqrt(self.k / (self.k + 1.0))
        s = math.sqrt(1.0 / (2.0 * (self.k + 1.0)))
        re = los + s * self._rng.standard_normal(n)
        im = s * self._rng.standard_normal(n)
        return re * re + im * im

    def gain_at(self, t: float) -> float:
        """|h|² at time ``t`` >= 0 s (gains are drawn lazily and kept: any t can be asked)."""
        if t < 0:
            raise ValueError(f"time must be >= 0 s, got {t}")
        k = int(t // self.block_s)
        if k >= len(self._gains):
            self._gains.extend(self.draw(k + 1 - len(self._gains)).tolist())
        return self._gains[k]

    def block_gains(self, first: int, n: int) -> np.ndarray:
        """|h|² of blocks first..first+n-1 (block k covers [k·block_s, (k+1)·block_s));
        the same values :meth:`gain_at` gives inside them."""
        if first < 0 or n < 0:
            raise ValueError(f"blocks must be >= 0, got first {first}, n {n}")
        if first + n > len(self._gains):
            self._gains.extend(self.draw(first + n - len(self._gains)).tolist())
        return np.array(self._gains[first:first + n])

    def state_dict(self) -> dict:
        return {"rng": self._rng.bit_generator.state, "gains": list(self._gains)}

    def load_state_dict(self, state: dict) -> None:
        self._rng.bit_generator.state = state["rng"]
        self._gains = [float(g) for g in state["gains"]]
