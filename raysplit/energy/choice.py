"""The per-inference cut: what each policy sends for one channel realisation.

``CutPlanner`` turns a model's profile into energies per cut for a batch over given
fading-block rates; a policy picks the cut. The proposed selection (PS) is the argmin
of the client's energy E over the layers l = 1..L (Krouka et al., §III-B: the raw input
is not among the paper's choices; ``layer_cuts(depth, with_input=True)`` adds it); the
baselines are fixed cuts: the first pooling layer ("pool-1"), the class scores
("softmax"), the raw input ("input", plain remote inference). PSNC is PS on the model
without compression: a planner of that model's profile with the same policy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from raysplit.codec import CodecConfig
from raysplit.energy.costs import HardwareCosts
from raysplit.energy.energy import CutEnergies, cut_energies
from raysplit.energy.profile import ModelProfile
from raysplit.energy.wire import check_codec, message_bits

POLICIES = ("ps", "pool-1", "softmax", "input")


def choose_cut(total: np.ndarray, allowed: Sequence[int] | None = None) -> int:
    """The cut of least energy (among ``allowed``; ties go to the earlier cut)."""
    total = np.asarray(total, dtype=float)
    if total.ndim != 1 or not len(total):
        raise ValueError(f"need one energy per cut, got shape {total.shape}")
    cuts = np.arange(len(total)) if allowed is None else np.asarray(sorted(set(allowed)), dtype=int)
    if not len(cuts) or cuts.min() < 0 or cuts.max() >= len(total):
        raise ValueError(f"allowed cuts {list(cuts)} outside 0..{len(total) - 1}")
    return int(cuts[np.argmin(total[cuts])])


def layer_cuts(depth: int, with_input: bool = False) -> range:
    """The cuts PS chooses from: the layers' outputs 1..L (and the raw input, 0)."""
    return range(0 if with_input else 1, depth + 1)


def policy_cut(policy: str, profile: ModelProfile, energies: CutEnergies, allowed: Sequence[int] | None = None) -> int:
    """The cut ``policy`` sends for these energies (PS: the cheapest of ``allowed``,
    default the layers 1..L)."""
    if policy == "ps":
        return choose_cut(energies.total, layer_cuts(profile.depth) if allowed is None else allowed)
    if policy == "pool-1":
        return profile.cut_named("pool1")
    if policy == "softmax":
        return profile.depth
    if policy == "input":
        return 0
    raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")


class CutPlanner:
    """Energies of every cut of one model for a batch of ``samples`` over given rates.

    Args:
        profile: the model's counts (``profile_model``).
        costs: energy per operation and per fetched element.
        codec: the wire encoding (bits per element and its metadata).
        count: "payload" (values + the encoding's metadata) or "message" (the whole message).
        power_w: transmit power P.
        block_s: fading block length.
    """

    def __init__(self, profile: ModelProfile, costs: HardwareCosts, codec: CodecConfig | str, count: str,
                 power_w: float, block_s: float) -> None:
        self.profile, self.costs = profile, costs
        self.codec, self.count = check_codec(codec), count
        self.power_w, self.block_s = power_w, block_s
        self.compute, self.memory = profile.processing(costs)  # per sample, cuts 0..L
        self._bits: dict[int, np.ndarray] = {}

    def bits(self, samples: int) -> np.ndarray:
        """Bits each cut sends for a batch of ``samples``."""
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        if samples not in self._bits:
            p = self.profile
            self._bits[samples] = np.array([
                message_bits((samples, p.shape_at(c)[0], *p.shape_at(c)[1:]), len(p.sent_at(c)), self.codec, self.count)
                for c in p.cuts], dtype=float)
        return self._bits[samples]

    def energies(self, samples: int, rates: np.ndarray) -> CutEnergies:
        """Every cut's energies for the batch; processing is paid per sample (eq. 6 per inference)."""
        return cut_energies(self.compute * samples, self.memory * samples, self.bits(samples), rates, self.block_s,
                            self.power_w)
