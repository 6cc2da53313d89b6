"""One client's uplink over time: a radio (eq. 3) on a block-fading channel.

Time is counted in fading blocks (``fading.block_s`` each, the coherence time): a
transmission starts at a block boundary and sees the blocks after it, so eq. 4's
integral runs over whole blocks of constant rate. The client knows the gains of the
blocks its transmission will use (the paper's Remark 1: perfect channel estimation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raysplit.energy.energy import Radio
from raysplit.link.channel import BlockFading

MAX_BLOCKS = 10**6  # a transmission that needs more blocks than this is an error, not a hang


@dataclass
class Uplink:
    """Args:
    radio: bandwidth, transmit power, noise, path loss.
    fading: the |h|² process (its ``block_s`` is the block length).
    """

    radio: Radio
    fading: BlockFading

    @property
    def block_s(self) -> float:
        return self.fading.block_s

    def gains(self, start: int, n: int) -> np.ndarray:
        """|h|² of blocks start..start+n-1."""
        return self.fading.block_gains(start, n)

    def rates_for(self, bits: float, start: int) -> np.ndarray:
        """The rates (bit/s) of the blocks from ``start`` on, as many as carry ``bits``."""
        mean = max(self.radio.rates(np.ones(1))[0], 1e-300)
        n = max(1, int(np.ceil(2.0 * bits / (mean * self.block_s))))
        rates = np.empty(0)
        while True:
            n = min(n, MAX_BLOCKS)
            if len(rates) < n:
                rates = np.concatenate([rates, self.radio.rates(self.gains(start + len(rates), n - len(rates)))])
            if rates.sum() * self.block_s >= bits or n == MAX_BLOCKS:
                break
            n *= 2
        if rates.sum() * self.block_s < bits:
            raise ValueError(f"{bits:g} bits do not fit in {MAX_BLOCKS} fading blocks "
                             f"({MAX_BLOCKS * self.block_s:g} s) "
                             f"at W = {self.radio.bandwidth_hz:g} Hz: the channel is too poor (raise the power or "
                             f"lower the path loss)")
        return rates
