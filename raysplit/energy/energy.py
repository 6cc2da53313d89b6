"""The client's energy for one transmission, term by term (Krouka et al., eq. 1-6), and its CO2.

    E_c  = e_M·M + e_A·A                     computation (eq. 1)
    E_m  = Γ·e_m                             memory access (eq. 2)
    R(t) = W·log2(1 + P·G·|h(t)|²/(N0·W))    Shannon rate (eq. 3)
    τ:     ∫₀^τ R(t) dt = bits               upload time over the fading blocks (eq. 4)
    E_tr = ∫₀^τ P dt = P·τ                   transmission (eq. 5, read as the power integral)
    E    = E_c + E_m + E_tr = E_p + E_tr      per inference (eq. 6)
    CO2  = E / 3.6e6 J/kWh · CI kg/kWh

G is a path gain (10^(-path_loss_db/10)); the paper gives none, so it is 1 by default and
P/(N0·W) is the mean receive SNR (66.7 at 15 kHz, 0.2 at 5 MHz, 0.067 at 15 MHz with
P = 1 mW and N0 = 1e-9 W/Hz). The rate, eq. 4 and eq. 5 are ``raysplit.link.channel``'s;
why eq. 5 is read as P·τ (the paper's τ·∫P dt has the unit J·s) is explained there.
Everything here is a pure function of numbers; which counts go in is ``profile``'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from raysplit.energy.costs import HardwareCosts
from raysplit.link.channel import shannon_rate, shannon_rates, transmit_energy, transmit_seconds_many

J_PER_KWH = 3.6e6
EU_CARBON_INDEX = 0.275  # kg CO2e per kWh, the EU average the paper uses (EEA, 2020)


def computation_energy(mults: float, adds: float, costs: HardwareCosts) -> float:
    """E_c of eq. 1, joules."""
    if mults < 0 or adds < 0:
        raise ValueError(f"operation counts must be >= 0, got {mults} multiplications, {adds} additions")
    return costs.mul_j * mults + costs.add_j * adds


def memory_energy(elements: float, costs: HardwareCosts) -> float:
    """E_m of eq. 2: Γ fetched elements (weights and biases), joules."""
    if elements < 0:
        raise ValueError(f"element count must be >= 0, got {elements}")
    return costs.element_j * elements


def co2_kg(joules: float | np.ndarray, carbon_index: float = EU_CARBON_INDEX) -> float | np.ndarray:
    """kg CO2e of ``joules`` of electricity at ``carbon_index`` kg/kWh."""
    if carbon_index < 0:
        raise ValueError(f"carbon index must be >= 0 kg/kWh, got {carbon_index}")
    return joules / J_PER_KWH * carbon_index


@dataclass(frozen=True)
class Radio:
    """The client's uplink.

    Args:
        bandwidth_hz: W.
        power_w: P, the transmit power (constant during a transmission).
        noise_psd: N0, W/Hz.
        path_loss_db: mean attenuation between client and server (0 = none: |h|² alone).
    """

    bandwidth_hz: float
    power_w: float = 1e-3
    noise_psd: float = 1e-9
    path_loss_db: float = 0.0

    def __post_init__(self) -> None:
        shannon_rate(self.bandwidth_hz, self.power_w, 1.0, self.noise_psd)  # checks W, P, N0
        if not math.isfinite(self.path_loss_db):
            raise ValueError(f"path loss must be a finite number of dB, got {self.path_loss_db}")

    @property
    def path_gain(self) -> float:
        return 10.0 ** (-self.path_loss_db / 10.0)

    @property
    def mean_snr(self) -> float:
        """P·G/(N0·W): the receive SNR at |h|² = 1."""
        return self.power_w * self.path_gain / (self.noise_psd * self.bandwidth_hz)

    def rates(self, gains: np.ndarray) -> np.ndarray:
        """R of eq. 3 in bit/s for each fading gain |h|²."""
        return shannon_rates(self.bandwidth_hz, self.power_w * self.path_gain, np.ravel(gains), self.noise_psd)


@dataclass(frozen=True)
class CutEnergies:
    """Energies of one transmission for every cut 0..L (arrays of length L+1), joules.

    Args:
        compute: E_c of running layers 1..l for every sample.
        memory: E_m of fetching their weights and biases for every sample.
        transmit: E_tr of sending the representation at the cut.
        seconds: τ, the upload time.
        bits: what was sent.
    """

    compute: np.ndarray
    memory: np.ndarray
    transmit: np.ndarray
    seconds: np.ndarray
    bits: np.ndarray

    @property
    def processing(self) -> np.ndarray:
        """E_p = E_c + E_m."""
        return self.compute + self.memory

    @property
    def total(self) -> np.ndarray:
        """E = E_p + E_tr (eq. 6)."""
        return self.compute + self.memory + self.transmit


def cut_energies(compute: np.ndarray, memory: np.ndarray, bits: np.ndarray, rates: np.ndarray, block_s: float,
                 power_w: float) -> CutEnergies:
    """E per cut for one channel realisation: ``compute``/``memory`` are the processing
    energies of cuts 0..L, ``bits`` what each cut sends, ``rates`` the rate in each fading
    block (bit/s, block k lasting ``block_s`` from the transmission's start)."""
    compute, memory, bits = (np.asarray(a, dtype=float) for a in (compute, memory, bits))
    if not compute.shape == memory.shape == bits.shape or compute.ndim != 1:
        raise ValueError(f"compute, memory and bits must be 1-d of one length, got {compute.shape}, "
                         f"{memory.shape}, {bits.shape}")
    seconds = transmit_seconds_many(bits, rates, block_s)
    transmit = np.array([transmit_energy(power_w, s) for s in seconds])
    return CutEnergies(compute, memory, transmit, seconds, bits)
