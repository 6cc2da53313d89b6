"""Helpers shared by the benchmark scripts: machine info, tables, result files, and a
background monitor of the Ray session's memory and of other processes' CPU use.

The benchmarks run on a shared, noisy machine, so every script compares configurations
side by side within one run and reports ratios; ``Monitor`` also records how much CPU
processes *outside* the benchmark's own session used meanwhile, so a noisy point can be
recognised in the JSON.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(ROOT))

try:  # Ray vendors psutil under ray/thirdparty_files; importing ray puts it on sys.path
    import psutil  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    import ray  # noqa: F401

    import psutil

GIB = 1024**3


# ----------------------------------------------------------------------------- machine


def _version(mod: str) -> str | None:
    try:
        return __import__(mod).__version__
    except Exception:  # noqa: BLE001 - missing or broken module: just not reported
        return None


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except Exception:  # noqa: BLE001
        return None


def library_changes() -> list[str] | None:
    """Uncommitted changes under raysplit/ and jobs/ when the benchmark ran (the code
    measured is the working tree, not only the commit)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "raysplit", "jobs"],
            capture_output=True, text=True, timeout=10,
        )
        return [ln.strip() for ln in out.stdout.splitlines() if ln.strip()] if out.returncode == 0 else None
    except Exception:  # noqa: BLE001
        return None


def machine_info() -> dict:
    vm = psutil.virtual_memory()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_total_gib": round(vm.total / GIB, 2),
        "memory_available_gib_at_start": round(vm.available / GIB, 2),
        "loadavg_at_start": [round(v, 2) for v in os.getloadavg()],
        "torch": _version("torch"),
        "ray": _version("ray"),
        "numpy": _version("numpy"),
        "pyarrow": _version("pyarrow"),
        "psutil": psutil.__version__,
        "git_commit": git_commit(),
        "uncommitted_library_changes": library_changes(),
    }


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- tables

Column = tuple[str, str, str]  # (key, header, format spec e.g. ".1f" or "d" or "")


def _cell(row: dict, key: str, fmt: str) -> str:
    v = row.get(key)
    if v is None:
        return "-"
    if isinstance(v, float) and v != v:  # NaN
        return "nan"
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    try:
        return format(v, fmt) if fmt else str(v)
    except (TypeError, ValueError):
        return str(v)


def text_table(rows: Sequence[dict], cols: Sequence[Column]) -> str:
    cells = [[_cell(r, k, f) for k, _, f in cols] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (_, h, _) in enumerate(cols)]
    line = "  ".join(h.rjust(w) for (_, h, _), w in zip(cols, widths))
    out = [line, "-" * len(line)]
    out += ["  ".join(c.rjust(w) for c, w in zip(cs, widths)) for cs in cells]
    return "\n".join(out)


def md_table(rows: Sequence[dict], cols: Sequence[Column]) -> str:
    out = ["| " + " | ".join(h for _, h, _ in cols) + " |", "|" + "|".join("---:" for _ in cols) + "|"]
    out += ["| " + " | ".join(_cell(r, k, f) for k, _, f in cols) + " |" for r in rows]
    return "\n".join(out)


def write_results(name: str, result: dict, markdown: str, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Write (and say so) benchmarks/results/<name>.json and <name>.md (or under ``out_dir``)."""
    d = Path(out_dir) if out_dir is not None else RESULTS
    d.mkdir(parents=True, exist_ok=True)
    jp, mp = d / f"{name}.json", d / f"{name}.md"
    jp.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    mp.write_text(markdown.rstrip() + "\n")
    print(f"wrote {jp} (+ .md)")
    return jp, mp


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(o)


def median(values: Iterable[float]) -> float:
    v = [x for x in values if x is not None and x == x]
    return statistics.median(v) if v else float("nan")


# ----------------------------------------------------------------------------- monitor


def session_processes(root_pid: int | None = None) -> list[psutil.Process]:
    """The driver and all its descendants. A Ray instance started by ``ray.init()`` in
    this process (gcs_server, raylet, dashboard, agents, every worker) is a descendant
    of the driver, so this is exactly the benchmark's own Ray session."""
    try:
        root = psutil.Process(root_pid or os.getpid())
        return [root] + root.children(recursive=True)
    except psutil.Error:
        return []


def process_role(p: psutil.Process, root_pid: int) -> str:
    """What a session process is: a Ray worker's actor class (its title ``ray::Shard.train``
    names the class), ``worker`` for one not yet bound, or the program's name."""
    if p.pid == root_pid:
        return "driver"
    cmd = p.cmdline()
    first = cmd[0] if cmd else p.name()
    if first.startswith("ray::"):
        return first[5:].split(".")[0].split(" ")[0] or "worker"
    if "default_worker.py" in " ".join(cmd):
        return "worker"
    name = first.rsplit("/", 1)[-1]
    if name.startswith("python"):  # the script (or -m module) it runs, not its flags
        if "-c" in cmd[1:]:  # inline code (a spawned helper): its text is no name
            return "python -c"
        args = [a for a in cmd[1:] if not a.startswith("-")]
        name = args[0].rsplit("/", 1)[-1] if args else name
    return name


class Monitor:
    """Samples, every ``interval`` seconds in a background thread:

    * memory of the session's processes (driver + descendants): sums of RSS, PSS and
      USS (``/proc/<pid>/smaps_rollup``). PSS splits each shared page (torch's
      libraries, the object store's shared memory) among the processes mapping it, so
      the PSS sum is the session's real footprint without double counting; USS counts
      only private pages (a lower bound); RSS double counts shared pages (upper bound).
    * CPU used by processes *outside* the session (other users of the shared machine),
      as cores averaged over the monitored window.

    * CPU seconds of the session's processes by role (``cpu_by_role``: a Ray actor's class,
      ``raylet``, ``gcs_server``, ``driver``, ...): each process's latest CPU time seen, so
      a process that lives between two samples is missed, and the driver's includes the
      sampler's own work.

    Peaks are over the samples taken; ``sample_seconds`` is the sampler's own cost.
    ``duty``: the most of the time it may spend sampling (reading ``smaps_rollup`` of
    dozens of large processes takes 0.3-0.5 s of kernel time a sample, so at a 0.5 s
    interval an unbounded sampler keeps a core busy: ``duty=0.1`` waits 9x a sample's
    time after it).
    """

    def __init__(self, interval: float = 0.5, root_pid: int | None = None, duty: float = 1.0) -> None:
        if not 0 < duty <= 1:
            raise ValueError(f"duty must be in (0, 1], got {duty}")
        self.interval, self.duty = interval, duty
        self.root_pid = root_pid or os.getpid()
        self.peak = {"rss": 0, "pss": 0, "uss": 0}
        self.peak_at: dict[str, float] = {}
        self.peak_processes = 0
        self.samples = 0
        self.sample_seconds: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._foreign_cpu: dict[int, float] = {}
        self._foreign_total = 0.0
        self._cpu: dict[int, tuple[str, float]] = {}  # pid -> (role, cpu seconds at the last sample)
        self.t0 = self.t1 = 0.0

    # -- sampling ---------------------------------------------------------------
    def _foreign(self, mine: set[int]) -> None:
        for p in psutil.process_iter():
            if p.pid in mine:
                continue
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            cpu = t.user + t.system
            last = self._foreign_cpu.get(p.pid)
            if last is not None and cpu >= last:
                self._foreign_total += cpu - last
            self._foreign_cpu[p.pid] = cpu

    def _note_cpu(self, p: psutil.Process) -> None:
        try:
            t = p.cpu_times()
            role = self._cpu[p.pid][0] if p.pid in self._cpu else process_role(p, self.root_pid)
        except psutil.Error:
            return
        if role in ("IDLE", "worker"):  # a pooled worker may become an actor later
            role = process_role(p, self.root_pid)
        self._cpu[p.pid] = (role, t.user + t.system)

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds by role over the monitored processes (latest sample of each)."""
        out: dict[str, float] = {}
        for role, cpu in self._cpu.values():
            out[role] = out.get(role, 0.0) + cpu
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def sample(self) -> dict:
        t = time.perf_counter()
        procs = session_processes(self.root_pid)
        tot = {"rss": 0, "pss": 0, "uss": 0}
        for p in procs:
            try:
                m = p.memory_full_info()
            except psutil.Error:
                continue
            tot["rss"] += m.rss
            self._note_cpu(p)
            tot["pss"] += getattr(m, "pss", m.rss)
            tot["uss"] += getattr(m, "uss", m.rss)
        now = time.perf_counter()
        for k, v in tot.items():
            if v > self.peak[k]:
                self.peak[k] = v
                self.peak_at[k] = now - self.t0
        self.peak_processes = max(self.peak_processes, len(procs))
        self._foreign({p.pid for p in procs})
        self.samples += 1
        self.sample_seconds.append(time.perf_counter() - t)
        return tot

    def _loop(self) -> None:
        while not self._stop.is_set():
            t = time.perf_counter()
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a vanished process must not stop sampling
                pass
            took = time.perf_counter() - t
            self._stop.wait(max(self.interval - took, took * (1 / self.duty - 1), 0.0))

    def start(self) -> "Monitor":
        self.t0 = time.perf_counter()
        self._foreign({p.pid for p in session_processes(self.root_pid)})  # baseline
        self._foreign_total = 0.0
        self._thread = threading.Thread(target=self._loop, name="bench-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.t1 = time.perf_counter()
        return self.result()

    def __enter__(self) -> "Monitor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def result(self) -> dict:
        wall = max((self.t1 or time.perf_counter()) - self.t0, 1e-9)
        return {
            "peak_pss_gib": self.peak["pss"] / GIB,
            "peak_uss_gib": self.peak["uss"] / GIB,
            "peak_rss_gib": self.peak["rss"] / GIB,
            "peak_processes": self.peak_processes,
            "mem_samples": self.samples,
            "interval_s": self.interval,
            "sampler_duty": self.duty,
            "sampler_ms_median": 1000 * median(self.sample_seconds),
            "foreign_cpu_cores": self._foreign_total / wall,
            "window_s": wall,
            "cpu_s_by_role": {k: round(v, 1) for k, v in self.cpu_by_role().items()},
        }


class ForeignCpu:
    """CPU cores used by processes outside this session over a ``with`` block (no
    memory sampling; for timing-sensitive benchmarks that must not add a sampler)."""

    def __enter__(self) -> "ForeignCpu":
        self.m = Monitor()
        self.m.t0 = time.perf_counter()
        self.m._foreign({p.pid for p in session_processes()})
        self.m._foreign_total = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.m._foreign({p.pid for p in session_processes()})
        self.cores = self.m._foreign_total / max(time.perf_counter() - self.m.t0, 1e-9)


def wait_for_quiet(max_wait: float, threshold_cores: float = 0.3, log: Callable[[str], None] = print) -> float:
    """Wait (up to ``max_wait`` s) until other processes use < ``threshold_cores``;
    returns the last measured foreign load. The machine is shared: this only reduces
    the chance that another job's burst lands inside a measurement."""
    t_end = time.perf_counter() + max_wait
    load = float("inf")
    while True:
        with ForeignCpu() as f:
            time.sleep(2.0)
        load = f.cores
        if load < threshold_cores or time.perf_counter() >= t_end:
            return load
        log(f"  (machine busy: other processes use {load:.2f} cores; waiting)")


def ray_init_quiet(**kw):
    """Start a private local Ray instance (``address="local"``: never attach to a cluster
    someone else started on this shared machine, whose memory and load are not ours and
    which may be stopped under us) with the log noise down; returns the seconds it took."""
    import ray

    kw.setdefault("address", "local")
    kw.setdefault("logging_level", "ERROR")
    kw.setdefault("log_to_driver", False)
    t = time.perf_counter()
    ray.init(**kw)
    return time.perf_counter() - t


def retry_on_ray_failure(
    fn: Callable, *args, retries: int = 2, reinit: bool = True, log: Callable[[str], None] = print, **kw
):
    """Run ``fn``; if it fails (e.g. another user's ``ray stop`` killed every Ray process
    on this shared machine), shut Ray down, start a private instance again (unless
    ``reinit`` is False: ``fn`` starts its own) and try again."""
    import ray

    for attempt in range(retries + 1):
        try:
            return fn(*args, **kw)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - Ray's failures come in many types
            if attempt == retries:
                raise
            log(f"  ! {type(e).__name__}: {str(e).splitlines()[0][:200]} -- restarting Ray and retrying")
            try:
                ray.shutdown()
            except Exception:  # noqa: BLE001
                pass
            time.sleep(3)
            if reinit:
                ray_init_quiet()
