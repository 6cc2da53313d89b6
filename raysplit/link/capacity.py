"""How a link's capacity moves over (simulated or wall) time: piecewise-constant processes.

Every process answers two questions, which is all the fluid simulation of the medium
needs: ``rate_at(t)`` (bit/s at time t) and ``next_change(t)`` (the first time after t at
which the rate may change; inf for a constant). They are pure functions of their
parameters and seed, so any time can be asked in any order, two runs with one seed see
the same capacities, and their checkpoint state is just their parameters.

* :class:`Constant`: a fixed rate.
* :class:`Fading`: block fading with the Shannon rate (Krouka et al. eq. 3, through
  :mod:`raysplit.link.channel`): the link's nominal rate R0 is the capacity at the mean
  SNR (|h|² = 1), which fixes the bandwidth W = R0 / log2(1 + SNR); in block k the rate is
  W·log2(1 + SNR·|h_k|²), with |h_k|² from :class:`~raysplit.link.channel.BlockFading`
  (Rayleigh by default: E[rate] < R0, by Jensen's inequality).
* :class:`TraceRate`: replay of a ``time_s, mbps`` trace from an offset, looping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from raysplit.link.channel import BlockFading, shannon_rate
from raysplit.link.traces import Trace

_NOISE_PSD = 1e-9  # W/Hz; any value: only the SNR matters
CHUNK_BLOCKS = 4096  # fading gains are drawn in chunks of this many blocks


@dataclass(frozen=True)
class Constant:
    bps: float

    def rate_at(self, t: float) -> float:
        return self.bps

    def next_change(self, t: float) -> float:
        return math.inf

    def mean_bps(self) -> float:
        return self.bps


@dataclass
class Fading:
    """Args:
    nominal_bps: the rate at |h|² = 1 (the link's rate without fading).
    snr_db: mean receive SNR in dB.
    kind: rayleigh | rician | none (``raysplit.link.channel.FADING``).
    block_s: coherence time: the gain holds this long.
    seed: gains are a function of (seed, block index).
    k: Rician K-factor.
    """

    nominal_bps: float
    snr_db: float = 20.0
    kind: str = "rayleigh"
    block_s: float = 0.01
    seed: int = 0
    k: float = 1.0
    _chunk: tuple[int, np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        BlockFading(self.kind, self.block_s, 0, self.k)  # validates kind, block, k
        if not self.nominal_bps > 0:
            raise ValueError(f"fading link rate must be > 0 bit/s, got {self.nominal_bps}")
        self.snr = 10.0 ** (self.snr_db / 10.0)
        self.bandwidth_hz = self.nominal_bps / math.log2(1.0 + self.snr)

    def gain(self, block: int) -> float:
        """|h|² of block ``block`` (drawn chunk by chunk; one chunk kept)."""
        c, i = divmod(block, CHUNK_BLOCKS)
        if self._chunk is None or self._chunk[0] != c:
            seed = int(np.random.SeedSequence([self.seed, c]).generate_state(1)[0])
            self._chunk = (c, BlockFading(self.kind, self.block_s, seed, self.k).draw(CHUNK_BLOCKS))
        return float(self._chunk[1][i])

    def rate_at(self, t: float) -> float:
        g = self.gain(int(max(t, 0.0) // self.block_s))
        power = self.snr * _NOISE_PSD * self.bandwidth_hz
        return shannon_rate(self.bandwidth_hz, power, g, _NOISE_PSD)

    def next_change(self, t: float) -> float:
        nxt = (math.floor(max(t, 0.0) / self.block_s) + 1) * self.block_s
        return nxt if nxt > t else math.nextafter(t, math.inf)

    def mean_bps(self) -> float:
        """E[W·log2(1 + SNR·|h|²)] estimated from the first 64 chunks' gains."""
        g = np.concatenate([BlockFading(self.kind, self.block_s, int(np.random.SeedSequence([self.seed, c])
                                                                     .generate_state(1)[0]), self.k).draw(CHUNK_BLOCKS)
                            for c in range(64)])
        return float(self.bandwidth_hz * np.mean(np.log2(1.0 + self.snr * g)))


@dataclass(frozen=True)
class TraceRate:
    """Args:
    trace: the samples.
    offset_s: replay starts this far into the trace (per client: see LinkSpec.stride).
    scale: multiply every rate by this.
    """

    trace: Trace
    offset_s: float = 0.0
    scale: float = 1.0

    def rate_at(self, t: float) -> float:
        return self.trace.mbps_at(t + self.offset_s) * 1e6 * self.scale

    def next_change(self, t: float) -> float:
        nxt = self.trace.next_change(t + self.offset_s) - self.offset_s
        return nxt if nxt > t else math.nextafter(t, math.inf)

    def mean_bps(self) -> float:
        return self.trace.mean_mbps() * 1e6 * self.scale


Capacity = Constant | Fading | TraceRate
