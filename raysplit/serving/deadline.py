"""How much of a message a link delivers by a deadline: the budget of one request.

A request's message leaves the client at ``start`` over the client's emulated link
(``raysplit.link``: its capacity process, packet framing, one-way delay, jitter and loss,
the same models the edge emulation trains with). Bytes arrive in order, packet by packet,
so the first ``e`` bytes are in once the packets that carry them have crossed and the
delay has passed. With loss, the message's retransmissions (drawn once per message by
the link) stretch every prefix in proportion, and the ARQ feedback rounds are added to
each (a conservative reading: a retransmission round may stall any prefix).

* :func:`prefix_arrivals`: when each prefix of a message has arrived;
* :func:`units_by_deadline`: how many whole units (a channel-major message's slices)
  arrive by a deadline;
* :func:`largest_fitting`: the largest budget whose whole message arrives in time (the
  compression module's B, or any budget with a known message size).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from raysplit.link.fluid import FluidNetwork, Stage
from raysplit.link.medium import ClientLink
from raysplit.link.packets import wire_bytes

__all__ = ["prefix_arrivals", "units_by_deadline", "largest_fitting", "in_time"]

_SLACK = 1e-9  # relative: arrival times are sums of float transfer times; a tie is in time


def in_time(arrival, deadline: float):
    """Whether (elementwise) an arrival is by the deadline, up to float rounding."""
    return np.asarray(arrival) <= deadline + _SLACK * max(1.0, abs(deadline))


def prefix_arrivals(link: ClientLink, start: float, ends: Sequence[int], direction: str = "up") -> np.ndarray:
    """Seconds after ``start`` at which the first ``ends[i]`` bytes of one message have
    arrived (``ends`` ascending, the last the whole message). Draws the message's loss and
    jitter from the link, once."""
    ends = [int(e) for e in ends]
    if not ends or any(b < a for a, b in zip(ends, ends[1:])) or ends[0] < 0:
        raise ValueError(f"ends must be ascending byte counts >= 0, got {ends}")
    spec = link.spec
    plan = link.plan(direction, ends[-1])
    once = wire_bytes(ends[-1], spec.mtu, spec.header)
    inflate = plan.wire / once if once else 1.0
    bits = [8.0 * wire_bytes(e, spec.mtu, spec.header) * inflate for e in ends]
    net = FluidNetwork({"link": link.capacity[direction]})
    stages = [Stage("flow", b - a, ("link",), plan.cap_bps) for a, b in zip([0.0] + bits[:-1], bits)]
    job = net.submit(0, float(start), stages)
    net.advance(math.inf)
    if not job.done:  # a capacity that never recovers (a trace of zeros)
        done = np.array(job.ends, dtype=np.float64)
        out = np.full(len(ends), math.inf)
        out[: len(done)] = done - start
    else:
        out = np.array(job.ends, dtype=np.float64) - start
    return out + plan.latency_s + plan.feedback_s


def units_by_deadline(arrivals: np.ndarray, deadline: float) -> int:
    """How many units arrive whole by ``deadline`` (seconds after the start), for the
    arrival times of a channel-major message's prefixes (``codec.slice_ends``: element 0
    the metadata, element j the first j slices): -1 if not even the metadata does."""
    if not deadline >= 0:
        raise ValueError(f"deadline must be >= 0 s, got {deadline}")
    return int(np.count_nonzero(in_time(arrivals, deadline))) - 1


def largest_fitting(sizes: Mapping[int, int], link: ClientLink, start: float, deadline: float,
                    direction: str = "up") -> int | None:
    """The largest budget in ``sizes`` ({budget: message bytes}) whose whole message arrives
    by ``deadline`` (seconds after ``start``), or None when none does. Each candidate is
    timed as its own message on the link (with its own draw of loss and jitter)."""
    if not deadline >= 0:
        raise ValueError(f"deadline must be >= 0 s, got {deadline}")
    best = None
    for budget in sorted(sizes):
        if in_time(prefix_arrivals(link, start, [sizes[budget]], direction)[-1], deadline):
            best = budget
    return best
