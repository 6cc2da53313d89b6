"""The link model (raysplit.link): the math of transfers, sharing, fading, loss, traces."""

from __future__ import annotations

import math
import random
import threading
import time

import numpy as np
import pytest

from raysplit.link.capacity import Constant, Fading, TraceRate
from raysplit.link.fluid import FluidNetwork, Stage
from raysplit.link.loss import GilbertElliott, LossProcess, mathis_rate
from raysplit.link.medium import Medium
from raysplit.link.packets import packet_count, wire_bytes
from raysplit.link.port import LocalPort
from raysplit.link.profiles import CELLS, PROFILES
from raysplit.link.spec import CellSpec, LinkSpec, parse_cell, parse_link
from raysplit.link.traces import Trace, read_trace, synthetic_trace, write_trace
from raysplit.link.units import parse_fraction, parse_rate, parse_time

INF = math.inf


# ----------------------------------------------------------------------------- text


def test_units():
    assert parse_rate("10mbit") == 10e6 and parse_rate("500kbit") == 5e5 and parse_rate("1gbit") == 1e9
    assert parse_rate("2.5Mbps") == 2.5e6 and parse_rate(300) == 300.0
    assert parse_time("40ms") == pytest.approx(0.04) and parse_time("250us") == pytest.approx(2.5e-4)
    assert parse_time("1.5s") == 1.5 and parse_fraction("1%") == pytest.approx(0.01)
    for bad, fn, msg in [("10mbt", parse_rate, "not a rate"), ("0mbit", parse_rate, "> 0"),
                         ("4xs", parse_time, "not a time"), ("-1ms", parse_time, "not a time"),
                         ("150%", parse_fraction, r"\[0, 1\]")]:
        with pytest.raises(ValueError, match=msg):
            fn(bad)


def test_link_strings_and_profiles():
    s = parse_link("10mbit/40ms/1%")
    assert (s.up_bps, s.down_bps, s.delay_s, s.loss, s.cell) == (10e6, 10e6, 0.04, 0.01, None)
    s = parse_link("lte,fading=none,up=2mbit,jitter=3ms")
    assert (s.up_bps, s.down_bps, s.fading, s.jitter_s, s.cell) == (2e6, 20e6, "none", 0.003, "lte")
    assert parse_link({"profile": "3g", "loss": "2%"}).loss == 0.02
    assert parse_link("wifi,ge=1%/30%").ge == GilbertElliott(0.01, 0.3)
    assert parse_link("lte,trace=x.csv").fading == "none"  # a trace replaces the profile's fading
    for name, spec in PROFILES.items():
        assert spec.source and spec.name == name
        assert spec.cell is None or spec.cell in CELLS
    assert all(c.source for c in CELLS.values())
    assert parse_cell("40mbit") == CellSpec("cell", 40e6, 40e6, "half")
    assert parse_cell("up=5mbit,down=20mbit").duplex == "full"
    assert parse_cell("wifi,name=lab").name == "lab"


@pytest.mark.parametrize("text,msg", [
    ("wfi", "or a profile: ethernet, wifi, lte, 3g, nbiot"),
    ("10mbit/40xs", "link delay '40xs' is not a time"),
    ("10mbit/4ms/120%", "link loss '120%' must be in"),
    ("wifi,foo=1", "unknown link setting 'foo'"),
    ("wifi,mtu=30,header=40", "mtu 30 must be larger than the per-packet header 40"),
    ("wifi,goodput=tcp", "unknown goodput model 'tcp'"),
    ("lte,fading=rician,trace=x.csv", "choose fading or a trace"),
    ("wifi,ge=1%/0", r"r \(bad -> good\) 0.0 must be in \(0, 1\]"),
    ("10mbit/1ms/1%/2", "RATE\\[/DELAY\\[/LOSS\\]\\]"),
])
def test_bad_links_name_the_value(text, msg):
    with pytest.raises(ValueError, match=msg):
        parse_link(text)


# ----------------------------------------------------------------------------- packets, loss


def test_wire_bytes_count_one_header_per_packet():
    assert packet_count(0, 1500, 40) == 0 and wire_bytes(0, 1500, 40) == 0
    assert packet_count(1460, 1500, 40) == 1 and wire_bytes(1460, 1500, 40) == 1500
    assert packet_count(1461, 1500, 40) == 2 and wire_bytes(1461, 1500, 40) == 1461 + 80
    for n in (1, 999, 32_773, 262_340):
        assert wire_bytes(n, 1538, 78) >= n


def test_arq_transmissions_match_the_geometric_mean():
    p, n, trials = 0.1, 100, 400
    lp = LossProcess(p, seed=3)
    sent = [lp.send(n) for _ in range(trials)]
    assert np.mean([s.transmissions for s in sent]) == pytest.approx(n / (1 - p), rel=0.02)
    assert all(s.rounds >= 1 and s.transmissions >= n for s in sent)
    assert LossProcess(0.0).send(n).transmissions == n and LossProcess(0.0).send(n).rounds == 1


def test_gilbert_elliott_loss_rate_and_burst_length():
    ge = GilbertElliott(p=0.02, r=0.25, loss_bad=0.8, loss_good=0.001)
    pi_b = 0.02 / 0.27
    assert ge.mean_loss() == pytest.approx(pi_b * 0.8 + (1 - pi_b) * 0.001)
    lost = LossProcess(ge=ge, seed=5).lost(400_000)
    assert lost.mean() == pytest.approx(ge.mean_loss(), rel=0.05)
    # With loss_bad = 1 and loss_good = 0, a loss burst is a bad spell: mean length 1/r.
    runs, n = [], 0
    for x in LossProcess(ge=GilbertElliott(0.02, 0.25), seed=6).lost(400_000):
        if x:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    assert np.mean(runs) == pytest.approx(1 / 0.25, rel=0.05)
    # Bursts: losses are correlated, unlike Bernoulli at the same rate.
    b = LossProcess(ge=GilbertElliott(0.02, 0.25), seed=7).lost(200_000)
    assert np.mean(b[1:] & b[:-1]) / b.mean() > 0.5  # P(lost | previous lost) ~ 1 - r


def test_mathis_rate():
    # MSS 1460 B, RTT 100 ms, p = 1 %: 1460*8/0.1 * 1.2247 / 0.1 = 1.43 Mbit/s.
    assert mathis_rate(1460, 0.1, 0.01) == pytest.approx(1460 * 8 / 0.1 * math.sqrt(1.5) / 0.1)
    assert mathis_rate(1460, 0.1, 0.0) == INF


# ----------------------------------------------------------------------------- sharing


def _one(spec: LinkSpec, **kw) -> Medium:
    return Medium({0: spec}, {0: 0}, **kw)


def test_transfer_time_on_a_dedicated_link_is_exact():
    spec = parse_link("8mbit/20ms")
    m = _one(spec, backhaul=parse_link("1gbit/1ms"), shard_work=True)
    port = LocalPort(m)
    up, down = 100_000, 50_000
    t = port.step(0, 0.25, up, 0.01, down, 0.02)
    wire_up, wire_down = wire_bytes(up, 1500, 40), wire_bytes(down, 1500, 40)
    # the access link (8 Mbit/s) is the bottleneck of each flow; then one-way access + backhaul delay
    assert t.wire_up == wire_up and t.wire_down == wire_down
    assert t.up_end == pytest.approx(0.25 + wire_up * 8 / 8e6 + 0.021)
    assert t.server_end == pytest.approx(t.up_end + 0.01)
    assert t.down_end == pytest.approx(t.server_end + wire_down * 8 / 8e6 + 0.021)
    assert t.end == pytest.approx(t.down_end + 0.02)
    assert t.up_bps == 8e6 and t.latency_s == pytest.approx(0.042)


def test_processor_sharing_on_a_cell_is_fair():
    cell = CellSpec("c", 10e6, 10e6, "full")
    links = {c: LinkSpec(up_bps=100e6, down_bps=100e6, cell="c", mtu=10_000, header=0) for c in range(4)}
    net = Medium(links, dict.fromkeys(range(4), 0), {"c": cell}, backhaul=LinkSpec(up_bps=1e12, down_bps=1e12),
                 shard_work=False)
    # four equal uplinks at once: each gets C/4, all end together at 4·size/C
    for c in range(4):
        net.submit_step(c, 0.0, 125_000, 0.0, 0, 0.0)
    ends = {t.client: t.up_end for t in net.progress()}
    assert ends == pytest.approx(dict.fromkeys(range(4), 4 * 1e6 / 10e6))


def test_max_min_fairness_with_unequal_sizes_and_caps():
    net = FluidNetwork({"cell": Constant(10.0), "slow": Constant(2.0)})
    net.submit(0, 0.0, [Stage("flow", 10, ("cell",))])
    net.submit(1, 0.0, [Stage("flow", 20, ("cell",))])
    net.submit(2, 0.0, [Stage("flow", 8, ("cell", "slow"))])  # capped at 2 by its own link
    ends = {j.client: j.ends[0] for j in net.advance(INF)}
    # 2 goes at 2/s (its link); 0 and 1 share the other 8: 4 each until 0 ends at 2.5;
    # then 1 (10 left) gets the 8 that 2 leaves: ends at 2.5 + 10/8; 2 ends at 8/2 = 4
    assert ends == pytest.approx({0: 2.5, 1: 3.75, 2: 4.0})


def test_half_duplex_cell_shares_up_and_down():
    cell = CellSpec("w", 10e6, 10e6, "half")
    links = {c: LinkSpec(up_bps=1e9, down_bps=1e9, cell="w", mtu=10_000, header=0) for c in range(2)}
    big = LinkSpec(up_bps=1e12, down_bps=1e12)
    m = Medium(links, {0: 0, 1: 0}, {"w": cell}, backhaul=big, shard_work=False)
    net = m.net
    # client 0 up and client 1 down at the same time on one half-duplex channel: 5 Mbit/s each
    net.submit(0, 0.0, [Stage("flow", 1e6, m.path(0, "up"))])
    net.submit(1, 0.0, [Stage("flow", 1e6, m.path(1, "down"))])
    assert [j.ends[0] for j in net.advance(INF)] == pytest.approx([0.2, 0.2])
    full = Medium(links, {0: 0, 1: 0}, {"w": CellSpec("w", 10e6, 10e6, "full")}, backhaul=big, shard_work=False)
    full.net.submit(0, 0.0, [Stage("flow", 1e6, full.path(0, "up"))])
    full.net.submit(1, 0.0, [Stage("flow", 1e6, full.path(1, "down"))])
    assert [j.ends[0] for j in full.net.advance(INF)] == pytest.approx([0.1, 0.1])


def test_medium_utilization_is_carried_over_offered():
    net = FluidNetwork({"cell": Constant(10.0)})
    net.submit(0, 0.0, [Stage("flow", 5, ("cell",), cap=5.0)])
    net.advance(INF)
    assert net.utilization("cell") == pytest.approx(0.5)


# ----------------------------------------------------------------------------- time-varying capacity


def test_rayleigh_fading_capacity_has_the_shannon_moments():
    f = Fading(10e6, snr_db=10.0, kind="rayleigh", block_s=0.01, seed=4)
    blocks = np.arange(60_000)
    g = np.array([f.gain(int(b)) for b in blocks])
    assert g.mean() == pytest.approx(1.0, abs=0.015) and g.var() == pytest.approx(1.0, abs=0.04)
    rates = np.array([f.rate_at(b * 0.01 + 0.005) for b in blocks[:20_000]])
    # E[W·log2(1 + SNR·X)], X ~ Exp(1), by quadrature; the nominal rate is W·log2(1 + SNR)
    x = np.linspace(0, 40, 400_001)
    expect = f.bandwidth_hz * np.trapezoid(np.log2(1 + f.snr * x) * np.exp(-x), x)
    assert rates.mean() == pytest.approx(expect, rel=0.02)
    assert rates.mean() < 10e6  # Jensen: fading costs capacity
    assert f.rate_at(0.123) == Fading(10e6, 10.0, "rayleigh", 0.01, seed=4).rate_at(0.123)  # a function of (seed, t)
    assert f.next_change(0.123) == pytest.approx(0.13)


def test_trace_replay_with_offsets_and_looping(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("time_s,mbps\n0,8\n1,2\n2,4  # a comment\n")
    tr = read_trace(p)
    assert tr.times == (0.0, 1.0, 2.0) and tr.mbps == (8.0, 2.0, 4.0) and tr.period == 3.0
    assert tr.mean_mbps() == pytest.approx(14 / 3)
    assert [tr.mbps_at(t) for t in (0.5, 1.0, 2.9, 3.2, 7.5, 8.5)] == [8, 2, 4, 8, 2, 4]
    r = TraceRate(tr, offset_s=1.0)
    assert r.rate_at(0.0) == 2e6 and r.next_change(0.0) == pytest.approx(1.0)
    # a message crossing a rate change: 6 Mbit from t=0.5 at 8 Mbit/s, then 2 Mbit/s
    net = FluidNetwork({"l": TraceRate(tr)})
    net.submit(0, 0.5, [Stage("flow", 6e6, ("l",))])
    (job,) = net.advance(INF)
    assert job.ends[0] == pytest.approx(1.0 + (6e6 - 4e6) / 2e6)
    # per-client offset: client i starts offset + i·stride into the trace
    spec = parse_link(f"10mbit,trace={p},offset=0.5,stride=1")
    assert spec.capacity("up", 0, 0).rate_at(0.0) == 8e6
    assert spec.capacity("up", 1, 0).rate_at(0.0) == 2e6
    assert spec.capacity("down", 2, 0).rate_at(0.0) == 4e6


@pytest.mark.parametrize("body,msg", [("", "no samples"), ("0,1\n0,2\n", "strictly increase"),
                                      ("0,1\nx,y\n", ":2: expected 'time_s, mbps'"), ("0,0\n1,0\n", "every rate is 0")])
def test_bad_traces_name_the_problem(tmp_path, body, msg):
    p = tmp_path / "bad.csv"
    p.write_text(body)
    with pytest.raises(ValueError, match=msg):
        read_trace(p)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_trace(tmp_path / "missing.csv")


def test_synthetic_trace_statistics_and_roundtrip(tmp_path):
    tr = synthetic_trace(20.0, cv=0.5, corr_s=5.0, duration_s=20_000, seed=1)
    r = np.array(tr.mbps)
    assert r.mean() == pytest.approx(20.0, rel=0.05) and r.std() / r.mean() == pytest.approx(0.5, rel=0.1)
    assert np.corrcoef(np.log(r[1:]), np.log(r[:-1]))[0, 1] == pytest.approx(math.exp(-1 / 5), abs=0.03)
    back = read_trace(write_trace(tmp_path / "s.csv", synthetic_trace(5.0, duration_s=30, seed=2)))
    assert back.mbps == pytest.approx(synthetic_trace(5.0, duration_s=30, seed=2).mbps, rel=1e-5)


# ----------------------------------------------------------------------------- determinism, state


def _lossy_medium(seed: int) -> Medium:
    spec = parse_link("wifi,ge=2%/30%,jitter=2ms")
    links = {c: spec for c in range(3)}
    return Medium(links, {0: 0, 1: 0, 2: 0}, dict(CELLS), seed=seed)


def _run_steps(port: LocalPort, client: int, steps: int, out: dict, jitter: bool) -> None:
    clock = 0.0
    for i in range(steps):
        if jitter:
            time.sleep(random.random() * 0.003)  # the real pace of the clients does not matter
        t = port.step(client, clock + 0.01 * (client + 1), 60_000 + 1000 * i, 0.004, 50_000, 0.02)
        out.setdefault(client, []).append(t)
        clock = t.end
    port.retire(client)


def _threaded(seed: int, jitter: bool) -> dict:
    port, out = LocalPort(_lossy_medium(seed)), {}
    threads = [threading.Thread(target=_run_steps, args=(port, c, 8, out, jitter)) for c in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert not any(th.is_alive() for th in threads)
    return out


def test_virtual_time_is_deterministic_whatever_the_real_pace():
    a, b = _threaded(7, jitter=True), _threaded(7, jitter=True)
    assert a == b
    assert sum(t.wire_up for t in a[0]) > sum(wire_bytes(60_000 + 1000 * i, 1538, 78) for i in range(8))  # losses
    assert _threaded(8, jitter=False) != a  # another seed draws other losses and jitter


def test_overlapping_clients_slow_each_other_down():
    spec = parse_link("50mbit/1ms,cell=lab")
    cells = {"lab": CellSpec("lab", 20e6, 20e6, "half")}
    alone = LocalPort(Medium({0: spec}, {0: 0}, cells)).step(0, 0.0, 500_000, 0.0, 1000, 0.0)
    m = Medium({0: spec, 1: spec}, {0: 0, 1: 0}, cells)
    port, out = LocalPort(m), {}
    th = [threading.Thread(target=lambda c=c: out.__setitem__(c, port.step(c, 0.0, 500_000, 0.0, 1000, 0.0)))
          for c in (0, 1)]
    for t in th:
        t.start()
    for t in th:
        t.join(timeout=10)
    assert out[0].up_end - out[0].start == pytest.approx(2 * (alone.up_end - alone.start) - 0.0015, rel=0.01)


def test_link_state_roundtrip_continues_the_same_draws():
    m1, m2 = _lossy_medium(3), _lossy_medium(3)
    for _ in range(5):
        m1.links[0].plan("up", 100_000)
    m2.load_state_dict(m1.state_dict())
    assert [m1.links[0].plan("up", 100_000) for _ in range(5)] == [m2.links[0].plan("up", 100_000) for _ in range(5)]
    state = m1.links[0].state_dict()
    assert len(repr(state)) < 1000  # compact: generator states, no history


def test_realtime_port_really_waits():
    spec = parse_link("4mbit/10ms")
    port = LocalPort(_one(spec, shard_work=False))
    t0 = time.perf_counter()
    plan = port.transfer(0, "up", 50_000)
    waited = time.perf_counter() - t0
    expect = plan.wire * 8 / 4e6 + plan.latency_s
    assert expect == pytest.approx(0.1 + 0.0105, rel=0.05)
    # it waits at least the transfer; a loaded machine may wake it late, never early
    assert expect - 0.002 <= waited < expect + 0.5


def test_transfer_time_of_one_message_on_one_link():
    from raysplit.link import transfer_time

    secs, plan = transfer_time(parse_link("250kbit/50ms"), 10_000)
    assert plan.wire == wire_bytes(10_000, 1500, 40) and secs == pytest.approx(plan.wire * 8 / 250e3 + 0.05)
    # over a trace it follows the capacity: 1 Mbit/s for 1 s, then 4 Mbit/s
    tr = Trace((0.0, 1.0), (1.0, 4.0))
    from raysplit.link.capacity import TraceRate

    net = FluidNetwork({"l": TraceRate(tr)})
    net.submit(0, 0.0, [Stage("flow", 3e6, ("l",))])
    assert net.advance(INF)[0].end == pytest.approx(1.5)
