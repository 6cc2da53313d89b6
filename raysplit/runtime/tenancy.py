"""Several tenants on one Ray cluster, side by side.

A tenant is one independent experiment: its own clients, shards, scheduler, device
classes and links. Each runs as its own driver process (``python -m
raysplit.runtime.tenancy``) connected to the shared cluster in its own Ray namespace
(``raysplit-<tenant>``), writing its own run directory, with every metric series tagged
by its name (``--tenant``). A tenant that fails (an error in its run, a crash of its
driver) ends alone: the others are separate processes and keep going, and its log
(``<out>/<tenant>/tenant.log``) and exit status are reported.

Tenants are listed in a YAML file (keys: the cluster job's options, as in ``--config``)::

    defaults:              # every tenant's, unless it sets its own
      dataset: digits
      max-batches: 8
    tenants:
      - {name: lab-a, clients: 4, link: wifi}
      - {name: lab-b, clients: 2, link: "lte,trace=lte.csv", policy: adaptive, target-step-s: 0.5}

or ``--tenants N``: N copies of the command line's options (tenants t0 .. tN-1).
Precedence: a tenant's own keys > the file's defaults > the command line > the job's
defaults. Unless a tenant says otherwise it plans with 1/K of the cluster's CPUs
(``cpu_share``) and its shards ask Ray for half of that share.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from raysplit.identity import new_run_id

NAMESPACE_PREFIX = "raysplit-"
RESERVED = ("out", "tenant")


@dataclass(frozen=True)
class Tenant:
    """Args:
    name: the tenant (its metric tag, namespace and directory name).
    options: its job options (option: value, as in --config).
    out: its run directory.
    """

    name: str
    options: dict
    out: Path

    @property
    def namespace(self) -> str:
        return NAMESPACE_PREFIX + self.name

    @property
    def config_path(self) -> Path:
        return self.out / "tenant.yaml"

    @property
    def log_path(self) -> Path:
        return self.out / "tenant.log"


def _key(k: str) -> str:
    return str(k).replace("_", "-")


def plan_tenants(spec: str, shared: dict, root: str | Path, cpus: float) -> list[Tenant]:
    """The tenants of ``spec`` (a YAML file or a count) with ``shared`` options (the
    command line's), each under ``root/<name>``."""
    root = Path(root)
    shared = {_key(k): v for k, v in shared.items()}
    if str(spec).strip().isdigit():
        n = int(spec)
        if n < 1:
            raise ValueError(f"--tenants {spec}: give at least 1 tenant")
        entries, defaults = [{"name": f"t{i}"} for i in range(n)], {}
    else:
        p = Path(spec)
        if not p.is_file():
            raise ValueError(f"--tenants {spec!r}: not a YAML file or a number of tenants")
        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ValueError(f"--tenants {spec}: not valid YAML: {e}") from None
        if isinstance(data, list):
            data = {"tenants": data}
        if not isinstance(data, dict) or not isinstance(data.get("tenants"), list) or not data["tenants"]:
            raise ValueError(f"--tenants {spec}: expected 'tenants:' with a list of tenants (each a mapping)")
        unknown = set(data) - {"tenants", "defaults"}
        if unknown:
            raise ValueError(f"--tenants {spec}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                             "allowed: tenants, defaults")
        defaults = {_key(k): v for k, v in (data.get("defaults") or {}).items()}
        entries = data["tenants"]
    tenants, seen = [], set()
    share = round(1.0 / len(entries), 4)
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"tenant {i}: expected a mapping of option: value, got {entry!r}")
        own = {_key(k): v for k, v in entry.items()}
        name = str(own.pop("name", own.pop("tenant", f"t{i}")))
        if name in seen:
            raise ValueError(f"tenant {name!r} is listed twice: tenant names must be distinct")
        seen.add(name)
        for k in RESERVED:
            if k in own or k in defaults:
                raise ValueError(f"tenant {name}: '{k}' is set by jobs/edge.py (the tenant's name and directory)")
        options = {**shared, **defaults, **own}
        options.pop("out", None)
        options["tenant"] = name
        options["out"] = str(root / name)
        options.setdefault("run-id", new_run_id(name))
        options.setdefault("cpu-share", share)
        options.setdefault("shard-cpus", max(0.01, round(cpus * share / 2, 3)))
        options.setdefault("progress", False)
        tenants.append(Tenant(name, options, root / name))
    return tenants


def check_tenant(tenant: Tenant):
    """The tenant's ClusterConfig, or ValueError naming the tenant and the bad value."""
    from raysplit.config.job import job_config, job_parser

    tenant.out.mkdir(parents=True, exist_ok=True)
    tenant.config_path.write_text(yaml.safe_dump(tenant.options, sort_keys=True))
    p = job_parser(f"tenant {tenant.name}", "")

    def fail(message):
        raise ValueError(f"tenant {tenant.name}: {message}")

    p.error = fail
    return job_config(p, ["--config", str(tenant.config_path)])


@dataclass
class TenantResult:
    """How one tenant's run went.

    Args:
        name: the tenant.
        returncode: its driver's exit status (0 = ok).
        seconds: its driver process's wall time.
        summary: its summary.json (None if it did not get that far).
        error: the last line of its log when it failed.
        log: its log file.
    """

    name: str
    returncode: int
    seconds: float
    summary: dict | None
    error: str | None
    log: str
    pid: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def launch(tenant: Tenant, address: str) -> subprocess.Popen:
    """Start the tenant's driver process on the cluster at ``address``."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    log = open(tenant.log_path, "w")
    return subprocess.Popen(
        [sys.executable, "-m", "raysplit.runtime.tenancy", "--address", address, "--namespace", tenant.namespace,
         "--config", str(tenant.config_path)],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
    )


def collect(tenant: Tenant, proc: subprocess.Popen, seconds: float) -> TenantResult:
    summary_path = tenant.out / "summary.json"
    summary = json.loads(summary_path.read_text()) if proc.returncode == 0 and summary_path.exists() else None
    error = None
    if proc.returncode != 0:
        lines = [ln for ln in tenant.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        error = lines[-1][:500] if lines else f"exit status {proc.returncode}"
    return TenantResult(tenant.name, proc.returncode, seconds, summary, error, str(tenant.log_path), proc.pid)


def run_tenants(tenants: list[Tenant], address: str, *, timeout_s: float | None = None,
                poll=None, poll_every_s: float = 0.5) -> list[TenantResult]:
    """Run every tenant at once; wait for all. ``poll(procs)`` is called while they run
    (benchmarks sample memory there); a tenant past ``timeout_s`` is killed."""
    procs = {t.name: (t, launch(t, address), time.perf_counter()) for t in tenants}
    done: dict[str, TenantResult] = {}
    while len(done) < len(procs):
        for name, (t, proc, t0) in procs.items():
            if name in done:
                continue
            if proc.poll() is not None:
                done[name] = collect(t, proc, time.perf_counter() - t0)
            elif timeout_s is not None and time.perf_counter() - t0 > timeout_s:
                proc.kill()
                proc.wait()
                done[name] = collect(t, proc, time.perf_counter() - t0)
                done[name].error = f"killed after {timeout_s:g} s (--tenant-timeout)"
        if poll is not None:
            poll({n: p for n, (_, p, _) in procs.items() if n not in done})
        if len(done) < len(procs):
            time.sleep(poll_every_s)
    return [done[t.name] for t in tenants]


def format_results(results: list[TenantResult]) -> str:
    head = ("tenant", "status", "clients", "final acc", "samples/s", "start-up s", "wall s", "emulated s")
    rows = []
    for r in results:
        s = r.summary or {}
        sps = s.get("samples", 0) / s["train_seconds"] if s.get("train_seconds") else None
        status = "ok" if r.ok else f"FAILED ({r.returncode}): {r.error}"
        rows.append((r.name, status if len(status) <= 90 else status[:87] + "...",
                     str(s.get("clients", "-")), f"{s['final_test_accuracy']:.3f}" if s else "-",
                     f"{sps:.1f}" if sps else "-", f"{s['startup_seconds']:.1f}" if s else "-", f"{r.seconds:.1f}",
                     f"{s['sim_seconds']:.1f}" if s.get("sim_seconds") is not None else "-"))
    w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    return "\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(line)) for line in [head, *rows])


# ----------------------------------------------------------------------------- one tenant's driver


def main(argv: list[str] | None = None) -> int:
    """Run one tenant: join the cluster in the tenant's namespace and run its job."""
    ap = argparse.ArgumentParser(prog="python -m raysplit.runtime.tenancy",
                                 description="Run one tenant of jobs/edge.py on a running Ray cluster.")
    ap.add_argument("--address", required=True, help="the cluster's address")
    ap.add_argument("--namespace", required=True, help="the tenant's Ray namespace")
    ap.add_argument("--config", required=True, help="the tenant's options (YAML)")
    args = ap.parse_args(argv)
    import ray

    from raysplit.config.job import job_config, job_parser
    from raysplit.records.summary import format_summary
    from raysplit.runtime.driver import run_cluster

    cc = job_config(job_parser("tenant", ""), ["--config", args.config])
    ray.init(address=args.address, namespace=args.namespace, log_to_driver=False)
    print(f"[tenant] {cc.train.tenant}: namespace {ray.get_runtime_context().namespace}", flush=True)
    try:
        summary, _ = run_cluster(cc)
    except (ValueError, FileNotFoundError) as e:  # bad values found once the data is known
        print(f"tenant {cc.train.tenant}: error: {' '.join(str(e).split())}", flush=True)  # one line
        return 2
    except Exception:  # noqa: BLE001 - report it; the other tenants are other processes
        traceback.print_exc()
        return 1
    finally:
        ray.shutdown()
    print(format_summary(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
