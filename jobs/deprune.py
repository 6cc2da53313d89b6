"""Multi-client split learning with Prune-Deprune on a Ray cluster.

    python jobs/deprune.py --clients 32                          # starts a local Ray
    ray job submit -- python jobs/deprune.py --clients 32        # on a running cluster

Defaults train the CPU-sized VGG on an 8,192-sample subset of the embedded Fashion-MNIST
(batch 32, 500 test images), deprune 4 -> 128 channels over 2 + 1 epochs, so it finishes
in minutes on 2 cores. Every option can also come from a YAML file (--config run.yaml).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Let `python jobs/deprune.py` work from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402

from raysplit.config import ClusterConfig  # noqa: E402
from raysplit.config.cli import ConfigParser  # noqa: E402
from raysplit.config.job import job_config, job_parser  # noqa: E402
from raysplit.records.summary import format_summary  # noqa: E402
from raysplit.runtime.failure import RunFailed  # noqa: E402


def parser(prog: str = "jobs/deprune.py", description: str | None = None, *, defaults: dict | None = None,
           sections: tuple = ()) -> ConfigParser:
    """The job's options; other jobs (jobs/prune.py, jobs/bottlefit.py) reuse them with their
    own defaults and extra config sections."""
    return job_parser(prog, description or __doc__.split("\n\n")[0], defaults=defaults, sections=sections)


def config_from_argv(p: ConfigParser, argv: list[str] | None) -> ClusterConfig:
    cc = job_config(p, argv)
    if cc.train.resume is not None:  # the run's own configuration, from its directory
        from raysplit.runtime.resume import given_options, resumed_config

        try:
            cc = resumed_config(cc.train.resume, given_options(p, argv))
        except (ValueError, FileNotFoundError) as e:
            p.error(str(e))
    return cc


def on_ray(p: ConfigParser, fn):
    """``fn()`` on Ray; a bad value found once the data is known exits with status 2."""
    # Bare init: joins the cluster under `ray job submit` (RAY_ADDRESS), else starts one.
    ray.init(address=p.namespace.address, log_to_driver=True)
    try:
        return fn()
    except (ValueError, FileNotFoundError) as e:
        p.parser.exit(2, f"{p.parser.prog}: error: {e}\n")
    except RunFailed as e:  # the failure policy stopped the run (its records so far are kept)
        p.parser.exit(1, f"{p.parser.prog}: the run was stopped: {e}\n")
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None, p: ConfigParser | None = None) -> int:
    p = p or parser()
    cc = config_from_argv(p, argv)
    from raysplit.runtime.driver import run_cluster

    summary, _ = on_ray(p, lambda: run_cluster(cc))
    print(format_summary(summary))
    print(f"run directory: {os.path.abspath(cc.train.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
