"""Krouka et al.'s Table III: the client's mean energy per inference for each method over
many channel draws, at one bandwidth.

Inference i starts at fading block ``i * interval_blocks`` of one seeded channel
process, whatever the previous one took (an energy model, not a queue), so every method
sees the very same channel realisation and their differences are the methods' alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from raysplit.energy.choice import CutPlanner, policy_cut
from raysplit.energy.energy import Radio, co2_kg
from raysplit.energy.uplink import Uplink
from raysplit.link.channel import BlockFading

# (the paper's name, which model, which policy): PSNC is PS on the uncompressed model;
# "input" (the raw image sent, the traditional remote inference) is not in the paper's table.
TABLE_METHODS = (("pool-1", "compressed", "pool-1"), ("softmax", "compressed", "softmax"),
                 ("PS", "compressed", "ps"), ("PSNC", "original", "ps"), ("input", "compressed", "input"))


@dataclass(frozen=True)
class MethodResult:
    """One column of Table III at one bandwidth (means per inference over the draws).

    Args:
        method, model: the paper's name and which model it runs.
        energy_j, processing_j, transmit_j: E, E_p, E_tr.
        co2_kg: the CO2 of E.
        p95_energy_j: the 95th percentile of E over the draws (fading tails are heavy).
        mean_cut: the mean cut sent; cuts: how often each cut was sent.
    """

    method: str
    model: str
    energy_j: float
    processing_j: float
    transmit_j: float
    co2_kg: float
    p95_energy_j: float
    mean_cut: float
    cuts: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Draws:
    """How the channel is drawn.

    Args:
        count: inferences simulated.
        fading: rayleigh | rician | none (``BlockFading``).
        block_s: coherence time (one gain per block).
        interval_blocks: blocks between the starts of consecutive inferences.
        seed: the channel's seed.
        rician_k: K-factor for rician fading.
        samples: inferences per transmission (1: the paper's per-inference choice).
    """

    count: int = 1000
    fading: str = "rayleigh"
    block_s: float = 0.01
    interval_blocks: int = 100
    seed: int = 0
    rician_k: float = 1.0
    samples: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or self.interval_blocks < 1 or self.samples < 1:
            raise ValueError(f"need count, interval_blocks and samples >= 1, got {self.count}, "
                             f"{self.interval_blocks}, {self.samples}")
        BlockFading(self.fading, self.block_s, self.seed, self.rician_k)  # checks kind and block


def simulate(planners: dict[str, CutPlanner], radio: Radio, draws: Draws, carbon_index: float,
             methods=TABLE_METHODS, allowed: Sequence[int] | None = None) -> list[MethodResult]:
    """Every method's mean energies over ``draws.count`` channel draws. ``planners`` maps
    "compressed" and "original" to the planner of that model; ``allowed``: the cuts PS
    and PSNC choose from (default: the layers 1..L)."""
    for _, model, _ in methods:
        if model not in planners:
            raise ValueError(f"no planner for the {model} model (have {', '.join(planners)})")
    uplink = Uplink(radio, BlockFading(draws.fading, draws.block_s, draws.seed, draws.rician_k))
    most = max(p.bits(draws.samples).max() for p in planners.values())
    e, ep, etr, cuts = ({m: [] for m, _, _ in methods} for _ in range(4))
    for i in range(draws.count):
        rates = uplink.rates_for(most, i * draws.interval_blocks)
        per_model = {name: p.energies(draws.samples, rates) for name, p in planners.items()}
        for name, model, policy in methods:
            en = per_model[model]
            c = policy_cut(policy, planners[model].profile, en, allowed)
            e[name].append(en.total[c] / draws.samples)
            ep[name].append(en.processing[c] / draws.samples)
            etr[name].append(en.transmit[c] / draws.samples)
            cuts[name].append(c)
    out = []
    for name, model, _ in methods:
        mean_e = float(np.mean(e[name]))
        out.append(MethodResult(name, model, mean_e, float(np.mean(ep[name])), float(np.mean(etr[name])),
                                float(co2_kg(mean_e, carbon_index)), float(np.percentile(e[name], 95)),
                                float(np.mean(cuts[name])), dict(sorted(Counter(cuts[name]).items()))))
    return out
