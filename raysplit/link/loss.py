"""Packet loss and what it costs: Bernoulli and Gilbert-Elliott loss, and two goodput models.

Loss processes (one per direction of a link, each with a private seeded generator):

* Bernoulli: every packet is lost with probability ``loss`` (tc netem ``loss random P``).
* Gilbert-Elliott: a two-state Markov chain per packet, in tc netem's ``gemodel p r 1-h 1-k``
  parameters: ``p`` = P(good -> bad), ``r`` = P(bad -> good), a packet is lost with
  probability ``loss_bad`` (1-h) in the bad state and ``loss_good`` (1-k) in the good one.
  Its stationary loss rate is π_B·loss_bad + π_G·loss_good with π_B = p / (p + r), and a
  bad spell lasts 1/r packets on average (bursts).

Goodput models (how loss turns into time and bytes; ``LinkSpec.goodput``):

* ``arq`` (default): selective-repeat ARQ in rounds. Round 1 sends every packet; the ones
  lost are sent again in round 2, one round-trip later (the receiver's feedback), and so
  on until all arrived. Each lost packet costs its bytes again (wire bytes include every
  retransmission) and each extra round costs one RTT. The counts are drawn from the
  loss process, so they are exact for one run and reproducible for a seed.
* ``mathis``: TCP Reno's steady-state throughput bound (Mathis, Semke, Mahdavi, Ott, "The
  macroscopic behavior of the TCP congestion avoidance algorithm", CCR 27(3), 1997):
  rate <= MSS / RTT · sqrt(3/2) / sqrt(p), with p the mean loss rate; it caps the
  transfer's rate, and the wire bytes are the expected ones, payload framing / (1 - p).
  No draws: deterministic without a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

GOODPUT_MODELS = ("arq", "mathis")
MAX_ROUNDS = 10_000
MATHIS_C = math.sqrt(1.5)


@dataclass(frozen=True)
class GilbertElliott:
    """Args:
    p: P(good -> bad) per packet, in [0, 1].
    r: P(bad -> good) per packet, in (0, 1].
    loss_bad: loss probability in the bad state (netem's 1-h).
    loss_good: loss probability in the good state (netem's 1-k).
    """

    p: float
    r: float
    loss_bad: float = 1.0
    loss_good: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"Gilbert-Elliott p (good -> bad) {self.p!r} must be in [0, 1]")
        if not 0.0 < self.r <= 1.0:
            raise ValueError(f"Gilbert-Elliott r (bad -> good) {self.r!r} must be in (0, 1]: the bad state must end")
        for name in ("loss_bad", "loss_good"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"Gilbert-Elliott {name} {v!r} must be in [0, 1]")
        if self.loss_good >= 1.0:
            raise ValueError("Gilbert-Elliott loss_good must be < 1: the good state must deliver packets")

    @property
    def bad_share(self) -> float:
        """π_B: the stationary probability of the bad state."""
        return self.p / (self.p + self.r) if self.p + self.r > 0 else 0.0

    def mean_loss(self) -> float:
        b = self.bad_share
        return b * self.loss_bad + (1.0 - b) * self.loss_good


@dataclass(frozen=True)
class Sent:
    """What sending ``packets`` packets took: ``transmissions`` in ``rounds`` rounds."""

    packets: int
    transmissions: int
    rounds: int


class LossProcess:
    """Per-packet loss of one direction of a link.

    Args:
        loss: Bernoulli loss probability (ignored when ``ge`` is given).
        ge: a Gilbert-Elliott chain instead.
        seed: the generator's seed.
    """

    def __init__(self, loss: float = 0.0, ge: GilbertElliott | None = None, seed: int = 0) -> None:
        if not 0.0 <= loss < 1.0:
            raise ValueError(f"packet loss {loss!r} must be in [0, 1)")
        self.loss, self.ge = float(loss), ge
        self.rng = np.random.default_rng(seed)
        self.bad = False  # Gilbert-Elliott state

    def mean_loss(self) -> float:
        return self.ge.mean_loss() if self.ge is not None else self.loss

    def lost(self, n: int) -> np.ndarray:
        """Which of the next ``n`` transmitted packets are lost (the chain moves on)."""
        if self.ge is None:
            if self.loss == 0.0:
                return np.zeros(n, dtype=bool)
            return self.rng.random(n) < self.loss
        g, u, step = self.ge, self.rng.random(n), self.rng.random(n)
        out = np.empty(n, dtype=bool)
        bad = self.bad
        for i in range(n):  # a packet sees the current state, then the chain steps
            out[i] = u[i] < (g.loss_bad if bad else g.loss_good)
            bad = step[i] >= g.r if bad else step[i] < g.p
        self.bad = bad
        return out

    def send(self, packets: int) -> Sent:
        """Selective-repeat ARQ: resend the lost packets round after round."""
        if packets <= 0:
            return Sent(0, 0, 0)
        if self.mean_loss() == 0.0 and self.ge is None:
            return Sent(packets, packets, 1)
        left, sent, rounds = packets, 0, 0
        while left:
            rounds += 1
            if rounds > MAX_ROUNDS:
                raise RuntimeError(f"the link lost packets for {MAX_ROUNDS} rounds in a row: check its loss settings")
            sent += left
            left = int(self.lost(left).sum())
        return Sent(packets, sent, rounds)

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "bad": self.bad}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.bad = bool(state["bad"])


def mathis_rate(mss_bytes: int, rtt_s: float, loss: float) -> float:
    """TCP Reno's loss-limited throughput in bit/s: MSS/RTT · sqrt(3/2)/sqrt(p) (inf when
    p = 0 or RTT = 0: loss does not limit the rate then)."""
    if mss_bytes <= 0:
        raise ValueError(f"MSS must be > 0 bytes, got {mss_bytes}")
    if loss < 0 or rtt_s < 0:
        raise ValueError(f"loss and RTT must be >= 0, got {loss}, {rtt_s}")
    if loss == 0 or rtt_s == 0:
        return math.inf
    return mss_bytes * 8.0 / rtt_s * MATHIS_C / math.sqrt(loss)
