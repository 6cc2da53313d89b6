"""Multi-client split learning with Prune-Deprune on a Ray cluster.

    python jobs/deprune.py --clients 32                          # starts a local Ray
    ray job submit -- python jobs/deprune.py --clients 32        # on a running cluster

Defaults train the CPU-sized VGG on an 8,192-sample subset of the embedded Fashion-MNIST
(batch 32, 500 test images), deprune 4 -> 128 channels over 2 + 1 epochs, so it finishes
in minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Let `python jobs/deprune.py` work from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402

from raysplit.cli import add_train_args, parse_with_config, train_config_from_args  # noqa: E402
from raysplit.results import format_summary  # noqa: E402
from raysplit.config.cluster import MALLOC_MODES, MODES, PARTITIONS, SHARD_SYNC, ClusterConfig  # noqa: E402
from raysplit.runtime.cpu_cap import MECHANISMS  # noqa: E402
from raysplit.scheduling import POLICIES  # noqa: E402


def fault(text: str) -> tuple[int, int]:
    try:
        c, e = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected CLIENT:EPOCH, e.g. 3:1") from None
    return c, e


_WORD = object()


def int_or(word: str, minimum: int, value: object = _WORD):
    """An argparse type: ``word`` (-> ``value``, default the word itself) or an int >= minimum."""

    def parse(text: str):
        if text == word:
            return word if value is _WORD else value
        try:
            k = int(text)
        except ValueError:
            k = minimum - 1
        if k < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {word} or an integer >= {minimum}")
        return k

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jobs/deprune.py", description=__doc__.split("\n\n")[0])
    add_train_args(p, default_out="runs/deprune")
    # Sized to finish in minutes on 2 cores with 32 clients (256 samples each).
    p.set_defaults(train_subset=8192, test_subset=500, batch_size=32)
    g = p.add_argument_group("cluster")
    g.add_argument("--clients", type=int, default=8, help="emulated edge clients")
    g.add_argument("--shards", type=int, default=1, help="server shards (tail replicas)")
    g.add_argument("--client-cpu", type=float, default=None, help="cap per client, fraction of a core (0.4)")
    g.add_argument("--cap-mechanism", choices=MECHANISMS, default="auto")
    g.add_argument(
        "--clients-per-actor",
        type=int_or("auto", 1),
        default="auto",
        help="emulated clients per actor process: N, or auto (one each up to 4 processes per CPU)",
    )
    g.add_argument("--openmp-spin", type=int_or("none", 0, None), default=30_000,
                   help="GOMP_SPINCOUNT in the actors (none = libgomp's default)")
    g.add_argument("--mode", choices=MODES, default="independent")
    g.add_argument("--policy", choices=POLICIES, default="sync", help="budget transitions together or per client")
    g.add_argument("--shard-sync", choices=SHARD_SYNC, default="average")
    g.add_argument("--sync-every", type=int, default=0, help="sync shard replicas every k steps (0: epoch end)")
    g.add_argument("--partition", choices=PARTITIONS, default="iid")
    g.add_argument("--alpha", type=float, default=0.5, help="Dirichlet alpha for --partition dirichlet")
    g.add_argument("--max-merge", type=int, default=32, help="micro-batches a shard merges into one step")
    g.add_argument("--shard-cpus", type=float, default=1.0)
    g.add_argument("--shard-device", choices=("auto", "cpu", "cuda"), default="auto")
    g.add_argument("--malloc", choices=MALLOC_MODES, default="auto",
                   help="actor memory mode: lean = least memory per client, fast = fastest steps")
    g.add_argument("--inject-fault", type=fault, default=None, help="testing: CLIENT:EPOCH raises there")
    g.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS, else a local Ray)")
    return p


def config_from_args(a: argparse.Namespace) -> ClusterConfig:
    return ClusterConfig(
        train=train_config_from_args(a),
        clients=a.clients,
        shards=a.shards,
        client_cpu=a.client_cpu,
        cap_mechanism=a.cap_mechanism,
        clients_per_actor=a.clients_per_actor,
        openmp_spin=a.openmp_spin,
        mode=a.mode,
        policy=a.policy,
        shard_sync=a.shard_sync,
        sync_every=a.sync_every,
        partition=a.partition,
        alpha=a.alpha,
        max_merge=a.max_merge,
        shard_cpus=a.shard_cpus,
        shard_device=a.shard_device,
        malloc=a.malloc,
        fail_client=a.inject_fault,
    )


def main(argv: list[str] | None = None) -> int:
    p = parser()
    a = parse_with_config(p, argv)
    try:
        cc = config_from_args(a)
    except ValueError as e:
        p.error(str(e))
    from raysplit.runtime.cluster import run_cluster

    # Bare init: joins the cluster under `ray job submit` (RAY_ADDRESS), else starts one.
    ray.init(address=a.address, log_to_driver=True)
    try:
        summary, _ = run_cluster(cc, progress=not a.no_progress)
    except (ValueError, FileNotFoundError) as e:  # bad values found once the data is known
        p.exit(2, f"{p.prog}: error: {e}\n")
    finally:
        ray.shutdown()
    print(format_summary(summary))
    if summary["failed_clients"]:
        print(f"failed clients: {summary['failed_clients']}")
    print(f"run directory: {os.path.abspath(cc.train.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
