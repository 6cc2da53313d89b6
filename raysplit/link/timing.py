"""What one step cost on the emulated network: the StepRow's link columns.

Without a link (``LinkTiming.neutral``) the columns hold neutral values: ``compute_s`` is
the measured client compute (forward + backward), ``uplink_s`` / ``downlink_s`` /
``sim_server_s`` are 0, ``sim_time`` and the capacities are NaN (no simulated clock, no
link), and the wire bytes equal the payload bytes (no framing modelled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LinkTiming:
    """Args:
    compute_s: client compute of the step (simulated in virtual mode, measured in realtime).
    uplink_s: from the uplink's start to the activation's arrival at the shard (sharing, latency,
        retransmissions).
    sim_server_s: from that arrival to the gradient's departure (the shard's work, shared).
    downlink_s: the gradient's way back.
    sim_time: the client's clock at the step's end (simulated, or wall seconds of its steps).
    link_up_mbps, link_down_mbps: the client's link capacity when each transfer began.
    wire_bytes_up, wire_bytes_down: bytes on the wire, headers and retransmissions included.
    latency_s: the propagation and ARQ feedback part of uplink_s + downlink_s.
    """

    compute_s: float
    uplink_s: float
    sim_server_s: float
    downlink_s: float
    sim_time: float
    link_up_mbps: float
    link_down_mbps: float
    wire_bytes_up: int
    wire_bytes_down: int
    latency_s: float = 0.0

    @classmethod
    def neutral(cls, compute_s: float, bytes_up: int, bytes_down: int) -> "LinkTiming":
        return cls(compute_s, 0.0, 0.0, 0.0, math.nan, math.nan, math.nan, int(bytes_up), int(bytes_down), 0.0)

    def columns(self) -> dict:
        """The StepRow fields this fills."""
        return {"compute_s": self.compute_s, "uplink_s": self.uplink_s, "sim_server_s": self.sim_server_s,
                "downlink_s": self.downlink_s, "sim_time": self.sim_time, "link_up_mbps": self.link_up_mbps,
                "link_down_mbps": self.link_down_mbps, "wire_bytes_up": self.wire_bytes_up,
                "wire_bytes_down": self.wire_bytes_down}
