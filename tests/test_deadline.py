"""Deadline-bound sending: when each prefix of a message arrives over an emulated link, and
how many slices fit a deadline (raysplit.serving.deadline on raysplit.link)."""

from __future__ import annotations

import numpy as np
import pytest

from raysplit import codec
from raysplit.link.medium import ClientLink
from raysplit.link.spec import parse_link
from raysplit.serving.deadline import largest_fitting, prefix_arrivals, units_by_deadline


def test_prefix_arrivals_on_a_constant_link_by_hand():
    link = ClientLink(0, parse_link("250kbit/20ms"), 0)  # mtu 1500, 40 header bytes per packet
    arr = prefix_arrivals(link, 5.0, [500, 2500, 4500])
    # 500 B: 1 packet -> 540 wire bytes; 2500 B: 2 packets -> 2580; 4500 B: 4 packets -> 4660
    want = np.array([540, 2580, 4660]) * 8 / 250e3 + 0.020
    np.testing.assert_allclose(arr, want, rtol=1e-9)
    assert units_by_deadline(arr, want[1] + 1e-9) == 1  # the metadata and one more unit
    assert units_by_deadline(arr, want[1] - 1e-6) == 0
    assert units_by_deadline(arr, 0.001) == -1 and units_by_deadline(arr, 10.0) == 2
    with pytest.raises(ValueError, match="ascending"):
        prefix_arrivals(link, 0.0, [10, 5])
    with pytest.raises(ValueError, match="deadline must be >= 0"):
        units_by_deadline(arr, -1.0)


def test_a_trace_link_delivers_by_its_rate_at_the_time(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("time_s,mbps\n0,1.0\n1,0.1\n2,1.0\n")
    link = ClientLink(0, parse_link(f"1mbit,trace={trace}"), 0)
    fast = prefix_arrivals(link, 0.0, [10_000])[-1]  # at 1 Mbit/s
    slow = prefix_arrivals(link, 1.0, [10_000])[-1]  # at 0.1 Mbit/s for its first second
    wire = (10_000 + 7 * 40) * 8
    assert fast == pytest.approx(wire / 1e6)
    assert slow == pytest.approx(wire / 1e5) and slow > 5 * fast


def test_slices_that_fit_a_deadline_decode_from_the_prefix_that_arrived():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 16, 4, 4)).astype(np.float32)
    buf = codec.encode(x, np.arange(16)[::-1].copy(), (1, 16, 4, 4), "float32", layout="channel", slices=4)
    ends = codec.slice_ends(buf)
    link = ClientLink(0, parse_link("100kbit"), 0)
    arr = prefix_arrivals(link, 0.0, ends)
    k = units_by_deadline(arr, float(arr[2]) + 1e-9)
    assert k == 2
    m = codec.decode(buf[: ends[k]])
    assert m.indices.tolist() == list(range(15, 7, -1)) and not m.complete


def test_largest_budget_that_fits():
    link = ClientLink(0, parse_link("250kbit"), 0)
    sizes = {4: 1000, 16: 4000, 64: 16000}
    t16 = prefix_arrivals(ClientLink(0, parse_link("250kbit"), 0), 0.0, [4000])[-1]
    assert largest_fitting(sizes, link, 0.0, t16) == 16
    assert largest_fitting(sizes, link, 0.0, 100.0) == 64
    assert largest_fitting(sizes, link, 0.0, 0.001) is None
