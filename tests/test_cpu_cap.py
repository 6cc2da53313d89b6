import time

import pytest

from raysplit.runtime import cpu_cap
from raysplit.runtime.cpu_cap import CpuCap, DutyCycleThrottle, quota_us


def burn(seconds: float) -> None:
    end = time.process_time() + seconds
    x = 0
    while time.process_time() < end:
        x += 1


def test_throttle_stretches_compute_to_the_cap():
    t = DutyCycleThrottle(0.25)
    w0 = time.perf_counter()
    for _ in range(4):
        with t.compute():
            burn(0.02)
        t.pace()
    wall = time.perf_counter() - w0
    assert t.cpu / wall <= 0.25 * 1.15
    assert t.slept > 0


def test_idle_time_earns_no_credit(monkeypatch):
    # Fake clocks: on a loaded machine a real burn takes far more wall time than CPU time,
    # which would hide the debt this test is about.
    clock = {"cpu": 0.0, "wall": 0.0}
    slept = []
    monkeypatch.setattr(cpu_cap.time, "perf_counter", lambda: clock["wall"])
    monkeypatch.setattr(cpu_cap.time, "sleep", slept.append)
    t = DutyCycleThrottle(0.5)
    t.clock = lambda: clock["cpu"]
    clock["wall"] += 0.1  # idle: must not allow a later burst
    with t.compute():
        clock["cpu"] += 0.03
        clock["wall"] += 0.03
    assert t.pace() == pytest.approx(0.03)  # 0.03 CPU-s at cap 0.5 take 0.06 s
    assert slept == [pytest.approx(0.03)]
    assert t.pace() == 0.0  # nothing owed twice


def test_quota_and_validation():
    assert quota_us(0.4) == 40_000
    assert quota_us(0.001) == 1000  # kernel minimum
    with pytest.raises(ValueError, match="cpu cap 0 invalid"):
        DutyCycleThrottle(0)
    with pytest.raises(ValueError, match="unknown cpu cap mechanism 'magic'"):
        CpuCap(0.4, "magic")


def test_auto_falls_back_to_throttle_without_cgroups(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_cap, "CGROUP_ROOT", tmp_path / "nothing")
    cap = CpuCap(0.4, "auto")
    assert cap.mechanism == "throttle"
    with pytest.raises(PermissionError, match="cgroup cpu cap requested but not possible"):
        CpuCap(0.4, "cgroup")
    assert CpuCap(None).mechanism == "none"


def test_cgroup_v1_files_are_written(monkeypatch, tmp_path):
    cpu = tmp_path / "cpu"
    cpu.mkdir()
    (cpu / "cpu.cfs_quota_us").write_text("-1")
    (cpu / "cgroup.procs").write_text("")
    monkeypatch.setattr(cpu_cap, "CGROUP_ROOT", tmp_path)
    cap = CpuCap(0.4, "cgroup", name="t1")
    assert cap.mechanism == "cgroup"
    d = cpu / "raysplit" / "t1"
    assert (d / "cpu.cfs_quota_us").read_text() == "40000"
    assert (d / "cpu.cfs_period_us").read_text() == "100000"
    assert (d / "cgroup.procs").read_text().strip().isdigit()
