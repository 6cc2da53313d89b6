"""Parsing the quantities a link is written in: rates, times, sizes, fractions.

The notation is tc's (``tc qdisc ... netem rate 10mbit delay 40ms loss 1%``): a rate is a
number with ``bit``/``kbit``/``mbit``/``gbit`` (or ``bps``/``kbps``/``mbps``/``gbps``,
the same thing, bits per second; SI prefixes: 1 kbit = 1000 bit); a time is a number with
``us``, ``ms`` or ``s``; a fraction is ``1%`` or ``0.01``. Every error names the text it
could not read and what is allowed.
"""

from __future__ import annotations

import re

_NUM = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_RATE = re.compile(rf"^{_NUM}\s*([kmgt]?)(?:bit|bps|bit/s|b/s)$", re.IGNORECASE)
_TIME = re.compile(rf"^{_NUM}\s*(us|ms|s)$", re.IGNORECASE)
_PREFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_TIME_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def parse_rate(text: str | float | int, what: str = "rate") -> float:
    """Bits per second from ``10mbit``, ``500kbit``, ``1gbit``, ``2.5mbps``; a bare number
    is bit/s."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip()
        m = _RATE.match(s)
        if m:
            value = float(m[1]) * _PREFIX[m[2].lower()]
        else:
            try:
                value = float(s)
            except ValueError:
                raise ValueError(f"{what} {text!r} is not a rate: write e.g. 10mbit, 500kbit, 1gbit "
                                 "(bits per second, SI prefixes)") from None
    if not value > 0:
        raise ValueError(f"{what} {text!r} must be > 0 bit/s")
    return value


def parse_time(text: str | float | int, what: str = "time", *, allow_zero: bool = True) -> float:
    """Seconds from ``40ms``, ``250us``, ``1.5s``; a bare number is seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip()
        m = _TIME.match(s)
        if m:
            value = float(m[1]) * _TIME_UNIT[m[2].lower()]
        else:
            try:
                value = float(s)
            except ValueError:
                raise ValueError(f"{what} {text!r} is not a time: write e.g. 40ms, 250us, 1.5s") from None
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{what} {text!r} must be {'>= 0' if allow_zero else '> 0'} s")
    return value


def parse_fraction(text: str | float | int, what: str = "fraction", *, below_one: bool = False) -> float:
    """A fraction from ``1%`` or ``0.01``, in [0, 1] (or [0, 1) with ``below_one``)."""
    try:
        if isinstance(text, str) and text.strip().endswith("%"):
            value = float(text.strip()[:-1]) / 100.0
        else:
            value = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a fraction: write e.g. 1% or 0.01") from None
    if not (0.0 <= value < 1.0 if below_one else 0.0 <= value <= 1.0):
        raise ValueError(f"{what} {text!r} must be in [0, {'1)' if below_one else '1]'}")
    return value


def format_rate(bps: float) -> str:
    """The shortest tc-style spelling of a rate (for messages and tables)."""
    for unit, scale in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if bps >= scale:
            return f"{bps / scale:g}{unit}"
    return f"{bps:g}bit"
