"""Packets on the emulated wire: a message of P payload bytes is cut into packets of at
most ``mtu`` bytes, each carrying ``header`` bytes of protocol headers and framing.

``mtu`` is what one packet occupies on the link, headers included, and ``header`` is the
part of it that is not payload, so a packet carries ``mtu - header`` payload bytes (for
TCP over Ethernet: mtu 1538 = 1500 IP MTU + 38 of Ethernet preamble, header, FCS and
inter-frame gap; header 78 = those 38 + 20 IPv4 + 20 TCP; payload 1460 = the MSS). The
wire bytes of a message are its payload plus one header per packet, so they are never
below the payload, and both are recorded.
"""

from __future__ import annotations

import math


def check_framing(mtu: int, header: int) -> None:
    if int(mtu) != mtu or int(header) != header:
        raise ValueError(f"mtu and header must be whole bytes, got mtu {mtu!r}, header {header!r}")
    if header < 0:
        raise ValueError(f"per-packet header must be >= 0 bytes, got {header}")
    if mtu <= header:
        raise ValueError(f"mtu {mtu} must be larger than the per-packet header {header} (a packet must carry payload)")


def packet_count(payload: int, mtu: int, header: int) -> int:
    """Packets needed for ``payload`` bytes (0 for an empty message)."""
    if payload < 0:
        raise ValueError(f"payload must be >= 0 bytes, got {payload}")
    return math.ceil(payload / (mtu - header)) if payload else 0


def wire_bytes(payload: int, mtu: int, header: int) -> int:
    """Bytes on the wire for ``payload`` bytes sent once: payload + one header per packet."""
    return payload + packet_count(payload, mtu, header) * header

