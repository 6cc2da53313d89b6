"""A real CPU cap for an emulated edge client.

Ray's ``num_cpus`` only schedules; it does not stop an actor from using a whole core.
Two mechanisms cap the compute of a client process at a fraction of one core:

* ``cgroup``: the process moves into its own cgroup with a CFS quota
  (v1: ``cpu.cfs_quota_us / cpu.cfs_period_us``; v2: ``cpu.max``). The kernel enforces
  it for every thread, including torch's. Needs a writable cgroup hierarchy (root, or a
  delegated subtree).
* ``throttle``: a duty-cycle throttle in the client's step loop. It measures the CPU time
  the process spent computing and sleeps until ``cpu / wall <= cap`` over the run (an
  average, not a per-millisecond, cap). Works everywhere; only paces the code that calls
  it.

``auto`` takes the cgroup where it can be written, the throttle otherwise.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

MECHANISMS = ("auto", "cgroup", "throttle", "none")
CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


def check_cap(cap: float | None) -> None:
    if cap is not None and not 0.01 <= cap <= 64:
        raise ValueError(f"cpu cap {cap} invalid: a fraction of one core in [0.01, 64] (0.4 = 40% of a core)")


def quota_us(cap: float, period_us: int = PERIOD_US) -> int:
    """CFS quota for ``cap`` cores per period (the kernel's minimum is 1000 us)."""
    return max(1000, int(round(cap * period_us)))


def _cgroup_dir(name: str) -> tuple[Path, str] | None:
    """Where a new cgroup for ``name`` would go and which interface version it uses."""
    v1 = CGROUP_ROOT / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists() and os.access(v1, os.W_OK):
        return v1 / "raysplit" / name, "v1"
    if (CGROUP_ROOT / "cgroup.controllers").exists() and os.access(CGROUP_ROOT, os.W_OK):
        controllers = (CGROUP_ROOT / "cgroup.subtree_control").read_text().split()
        if "cpu" in controllers:
            return CGROUP_ROOT / "raysplit" / name, "v2"
    return None


def cgroup_available() -> bool:
    return _cgroup_dir("probe") is not None


@dataclass
class CgroupCap:
    """The process's own cgroup with a CPU quota; ``release`` moves it back out."""

    path: Path
    version: str
    cap: float

    @classmethod
    def apply(cls, name: str, cap: float, pid: int | None = None) -> "CgroupCap":
        found = _cgroup_dir(name)
        if found is None:
            raise PermissionError("no writable cgroup cpu controller under /sys/fs/cgroup")
        path, version = found
        path.mkdir(parents=True, exist_ok=True)
        if version == "v2":
            parent = path.parent
            ctl = parent / "cgroup.subtree_control"
            if ctl.exists() and "cpu" not in ctl.read_text().split():
                ctl.write_text("+cpu")
            (path / "cpu.max").write_text(f"{quota_us(cap)} {PERIOD_US}")
        else:
            (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (path / "cpu.cfs_quota_us").write_text(str(quota_us(cap)))
        (path / "cgroup.procs").write_text(str(pid or os.getpid()))
        return cls(path, version, cap)

    def release(self, pid: int | None = None) -> None:
        root = CGROUP_ROOT / "cpu" if self.version == "v1" else CGROUP_ROOT
        try:
            (root / "cgroup.procs").write_text(str(pid or os.getpid()))
            self.path.rmdir()
        except OSError:
            pass  # the directory is removed by the next cleanup if a process still holds it


class DutyCycleThrottle:
    """CPU cap by sleeping: a compute block that used c CPU-seconds must take at least
    c / cap wall-seconds, as it would on a core of ``cap`` times the speed.

    Usage: ``with throttle.compute(): work()`` then ``throttle.pace()`` where waiting is
    acceptable (between steps). Only CPU time inside ``compute`` counts, and time spent
    idle (waiting on the server) earns no credit, like a CFS quota that is refilled every
    period and not saved up.
    """

    def __init__(self, cap: float, per_thread: bool = False) -> None:
        check_cap(cap)
        self.cap = cap
        # process_time counts every thread (right for one client whose torch may use
        # several); thread_time only the caller (right when clients share a process).
        self.clock = time.thread_time if per_thread else time.process_time
        self.cpu = 0.0
        self.slept = 0.0
        self.debt = 0.0

    class _Block:
        def __init__(self, t: "DutyCycleThrottle") -> None:
            self.t = t

        def __enter__(self) -> None:
            self.c0 = self.t.clock()
            self.w0 = time.perf_counter()

        def __exit__(self, *exc) -> None:
            c = self.t.clock() - self.c0
            self.t.cpu += c
            self.t.debt += c / self.t.cap - (time.perf_counter() - self.w0)

    def compute(self) -> "DutyCycleThrottle._Block":
        return self._Block(self)

    def pace(self) -> float:
        """Sleep off the time owed; returns the seconds slept."""
        wait, self.debt = max(self.debt, 0.0), 0.0
        if wait > 0:
            time.sleep(wait)
            self.slept += wait
        return wait


class CpuCap:
    """What a client actor holds: the chosen mechanism, applied once at start."""

    def __init__(
        self, cap: float | None, mechanism: str = "auto", name: str = "client", per_thread: bool = False
    ) -> None:
        if mechanism not in MECHANISMS:
            raise ValueError(f"unknown cpu cap mechanism {mechanism!r}; choose one of {MECHANISMS}")
        check_cap(cap)
        self.cap = cap
        self.cgroup: CgroupCap | None = None
        self.throttle: DutyCycleThrottle | None = None
        self.mechanism = "none"
        if cap is None or mechanism == "none":
            return
        if mechanism in ("auto", "cgroup"):
            try:
                self.cgroup = CgroupCap.apply(name, cap)
                self.mechanism = "cgroup"
                return
            except OSError as e:
                if mechanism == "cgroup":
                    raise PermissionError(f"cgroup cpu cap requested but not possible here: {e}") from e
        self.throttle = DutyCycleThrottle(cap, per_thread=per_thread)
        self.mechanism = "throttle"

    def compute(self):
        if self.throttle is not None:
            return self.throttle.compute()
        return _NullBlock()

    def pace(self) -> float:
        return self.throttle.pace() if self.throttle is not None else 0.0

    def release(self) -> None:
        if self.cgroup is not None:
            self.cgroup.release()
            self.cgroup = None


class _NullBlock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None
