"""Built-in link and cell profiles, each with the source of its numbers.

Where a number is a standard's (a PHY rate, a frame size) the standard is named; where it
is measured by others, the measurement; where it is our assumption (an efficiency, an
uplink/downlink ratio), it says so. A user's own numbers go in a link string
(``--link 10mbit/40ms/1%``) or a trace file.

=========  ==================  =========  ===========  ======  ==================
profile    up / down           delay      jitter       loss    shared cell
=========  ==================  =========  ===========  ======  ==================
ethernet   1 Gbit/s / 1        0.335 ms   0.11 ms      0       none (switched)
wifi       40 / 40 Mbit/s      2 ms       1 ms         0.1 %   wifi: 40 Mbit/s half duplex
lte        8 / 20 Mbit/s       25 ms      5 ms         0.1 %   lte: 25 / 75 Mbit/s, Rayleigh fading 20 dB
3g         0.5 / 2 Mbit/s      75 ms      15 ms        0.5 %   3g: 2 / 7.2 Mbit/s
nbiot      62 / 26 kbit/s      500 ms     200 ms       1 %     nbiot: 250 / 100 kbit/s
=========  ==================  =========  ===========  ======  ==================
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from raysplit.link.spec import CellSpec, LinkSpec
from raysplit.link.traces import Trace, read_trace

M = 1e6

PROFILES: dict[str, LinkSpec] = {
    "ethernet": LinkSpec(
        name="ethernet", up_bps=1e9, down_bps=1e9, delay_s=0.335e-3, jitter_s=0.11e-3, loss=0.0,
        mtu=1538, header=78, cell=None,
        source="1000BASE-T (IEEE 802.3ab) line rate; one-way delay and jitter = half the RTT measured over "
               "Ethernet in the Prune-Deprune paper, sec. 4.1 (0.670 +- 0.219 ms); frame = 1500 B IP MTU + 38 B "
               "Ethernet preamble/header/FCS/gap, header 78 B = 38 + IPv4 20 + TCP 20",
    ),
    "wifi": LinkSpec(
        name="wifi", up_bps=40 * M, down_bps=40 * M, delay_s=2e-3, jitter_s=1e-3, loss=0.001,
        mtu=1538, header=78, cell="wifi",
        source="IEEE 802.11n, 2.4 GHz, 20 MHz, 1 spatial stream, MCS 7: 65 Mbit/s PHY rate; capacity 40 Mbit/s "
               "assumes ~60 % MAC efficiency (DCF contention, preambles, ACKs), shared half duplex by the whole "
               "cell; 802.11 MAC 24 + QoS 2 + LLC/SNAP 8 + FCS 4 = 38 B framing; delay, jitter, residual loss "
               "after MAC retries: assumptions",
    ),
    "lte": LinkSpec(
        name="lte", up_bps=8 * M, down_bps=20 * M, delay_s=25e-3, jitter_s=5e-3, loss=0.001,
        mtu=1500, header=40, fading="rayleigh", snr_db=20.0, block_s=0.01, cell="lte",
        source="down 20 Mbit/s: the Ghent 4G/LTE bandwidth logs (van der Hooft et al., IEEE Comm. Letters 2016) "
               "run at 2.0-2.8 MB/s while driving; up 8 Mbit/s: assumption (~0.4 of down; LTE Cat 4's peaks are "
               "50/150 Mbit/s, 3GPP TS 36.306); 25 ms one way: half of a typical 50 ms LTE RTT (assumption); "
               "Rayleigh block fading at 20 dB mean SNR, 10 ms coherence (Krouka et al.'s channel model)",
    ),
    "3g": LinkSpec(
        name="3g", up_bps=0.5 * M, down_bps=2 * M, delay_s=75e-3, jitter_s=15e-3, loss=0.005,
        mtu=1500, header=40, cell="3g",
        source="down 2 Mbit/s: the HSDPA logs of Telenor's 3G network in Norway (Riiser et al., MMSys 2013) "
               "show ~250 kB/s; up 0.5 Mbit/s: assumption (HSUPA, a quarter of down); 75 ms one way: half of a "
               "typical 150 ms 3G RTT (assumption)",
    ),
    "nbiot": LinkSpec(
        name="nbiot", up_bps=62e3, down_bps=26e3, delay_s=0.5, jitter_s=0.2, loss=0.01,
        mtu=1280, header=48, cell="nbiot",
        source="3GPP Rel-13 NB-IoT, UE category NB1 (3GPP TS 36.306): peak ~62 kbit/s up (multi-tone), "
               "~26 kbit/s down; latency: 3GPP TR 45.820 targets <= 10 s, 0.5 +- 0.2 s one way is our "
               "assumption for a device in good coverage; 1280 B IPv6 minimum MTU, 48 B IPv6 + UDP headers",
    ),
}

CELLS: dict[str, CellSpec] = {
    "wifi": CellSpec("wifi", 40 * M, 40 * M, "half", source=PROFILES["wifi"].source),
    "lte": CellSpec("lte", 25 * M, 75 * M, "full",
                    source="one 20 MHz FDD carrier's sector throughput (assumption: ~1.25/3.75 bit/s/Hz up/down)"),
    "3g": CellSpec("3g", 2 * M, 7.2 * M, "full", source="HSDPA category 8 peak 7.2 Mbit/s (3GPP TS 25.306); "
                   "HSUPA 2 Mbit/s: assumption"),
    "nbiot": CellSpec("nbiot", 250e3, 100e3, "full",
                      source="one 180 kHz NB-IoT carrier shared by its devices (assumption: ~4 NB1 devices' peak)"),
}


def get_profile(name: str) -> LinkSpec:
    if name not in PROFILES:
        raise ValueError(f"unknown link profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


def get_cell(name: str) -> CellSpec:
    if name not in CELLS:
        raise ValueError(f"unknown cell {name!r}; choose one of {', '.join(CELLS)} (or give a rate, e.g. 40mbit)")
    return CELLS[name]


@functools.lru_cache(maxsize=32)
def _load(path: str, mtime: float) -> Trace:
    return read_trace(path)


def load_trace(path: str | os.PathLike) -> Trace:
    """A trace file, read once per process (re-read when it changes)."""
    p = Path(path)
    try:
        mtime = p.stat().st_mtime
    except FileNotFoundError:
        raise FileNotFoundError(f"trace file {str(p)!r} not found (expected CSV lines 'time_s, mbps')") from None
    return _load(str(p.resolve()), mtime)
