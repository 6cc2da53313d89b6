"""Multi-tenant edge emulation: K independent experiments side by side on one Ray cluster.

    python jobs/edge.py --tenants tenants.yaml                 # the tenants listed in a file
    python jobs/edge.py --tenants 4 --clients 2 --link wifi    # 4 tenants of the same options
    ray job submit -- python jobs/edge.py --tenants tenants.yaml

Each tenant (its own clients, shards, scheduler, device classes and links; any option of
jobs/deprune.py) runs in its own driver process and Ray namespace, writes <out>/<tenant>/
and tags its metrics with its name; a failing tenant does not stop the others. The
command line's options are every tenant's defaults (see raysplit.runtime.tenancy for
the file format). Exit status 0 when every tenant finished, 1 when one failed.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

# Let `python jobs/edge.py` work from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402
import yaml  # noqa: E402

from raysplit.config.job import job_parser  # noqa: E402
from raysplit.runtime.tenancy import check_tenant, format_results, plan_tenants, run_tenants  # noqa: E402


def parser():
    p = job_parser("jobs/edge.py", __doc__.split("\n\n")[0], defaults={"out": "runs/edge"})
    p.parser.add_argument("--tenants", required=True, metavar="FILE|N",
                          help="YAML file listing the tenants, or a number of tenants of the options given")
    p.parser.add_argument("--tenant-timeout", type=float, default=None, metavar="SECONDS",
                          help="kill a tenant that runs longer than this (default: no limit)")
    return p


def shared_options(p, argv) -> tuple[dict, str]:
    """The options given (command line over --config), as their text, and the root out."""
    values = p.parse(argv)  # every shared option is checked here
    ns = vars(p.namespace)
    given = {}
    if ns.get("config"):
        given.update({str(k).replace("_", "-"): v for k, v in (yaml.safe_load(Path(ns["config"]).read_text()) or {})
                      .items()})
    for flag, opt in p.options.items():
        if opt.dest in ns:
            given[flag] = ns[opt.dest]
    root = next(v for cls, vals in values.items() for k, v in vals.items() if k == "out")
    given.pop("out", None)
    return given, root


def main(argv: list[str] | None = None) -> int:
    p = parser()
    shared, root = shared_options(p, argv)
    ray.init(address=p.namespace.address, log_to_driver=False)
    try:
        cpus = ray.cluster_resources().get("CPU", 1.0)
        address = ray.get_runtime_context().gcs_address
        try:
            tenants = plan_tenants(p.namespace.tenants, shared, root, cpus)
            configs = [check_tenant(t) for t in tenants]  # a bad tenant is reported before anything starts
        except ValueError as e:
            p.parser.exit(2, f"{p.parser.prog}: error: {e}\n")
        for t, cc in zip(tenants, configs):
            print(f"[edge] tenant {t.name}: {cc.clients} clients, {cc.shards} shard(s), {cc.train.method} "
                  f"{list(cc.train.budgets)}, link {cc.train.link.link if not cc.train.link.devices else 'by device class'}"
                  f" -> {t.out}", flush=True)
        results = run_tenants(tenants, address, timeout_s=p.namespace.tenant_timeout)
    finally:
        ray.shutdown()
    print(format_results(results))
    out = Path(root)
    (out / "tenants.json").write_text(json.dumps([asdict(r) for r in results], indent=2, default=str) + "\n")
    print(f"tenants: {out.resolve() / 'tenants.json'}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
