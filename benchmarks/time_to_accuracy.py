"""Time to accuracy on an emulated network: none vs fixed vs deprune vs adaptive.

Every method trains the same 8 clients (virtual mode, modelled compute: deterministic)
under three links:

* ``ethernet``: a dedicated 1 Gbit/s switched link per client (the profile);
* ``wifi``: all 8 clients on one shared 40 Mbit/s half-duplex Wi-Fi cell (the profile);
* ``lte-trace``: LTE clients whose capacity replays a fluctuating trace (log-normal AR(1),
  mean 20 Mbit/s down / 8 up, cv 0.6, 5 s correlation; written next to the results),
  each client from its own offset, sharing the LTE cell.

For each (link, method): the emulated seconds until the test accuracy first reaches
none's final accuracy under the same link (evaluated after every epoch), the emulated
seconds of the whole run, and the bytes on the wire. none trains ``--epochs``; the
compressed methods, whose epochs cost less, may train up to ``--compressed-epochs``
(default twice as many) to get there. The adaptive policy keeps each client's emulated
step time under ``--target-step-s`` (it starts at B = 128). Compute is modelled: a client
is one 50 GFLOP/s core (this machine's, measured on vgg_small), a shard a 1 TFLOP/s GPU.

    python benchmarks/time_to_accuracy.py           # 12 runs, ~25 min on 2 cores
    python benchmarks/time_to_accuracy.py --quick   # smoke run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "time_to_accuracy"
METHODS = ("none", "fixed", "deprune", "adaptive")
LINKS = ("ethernet", "wifi", "lte-trace")


def link_config(name: str, trace_dir: Path, a):
    from raysplit.config import LinkConfig
    from raysplit.link.traces import synthetic_trace, write_trace

    kw = dict(sim_compute="model", device_gflops=a.device_gflops, server_gflops=a.server_gflops)
    if name == "ethernet":
        return LinkConfig(link="ethernet", **kw)
    if name == "wifi":
        return LinkConfig(link="wifi", **kw)
    down = write_trace(trace_dir / "lte_down.csv", synthetic_trace(20.0, cv=0.6, corr_s=5.0, duration_s=900,
                                                                   floor_mbps=0.5, seed=11, name="lte-down"))
    up = write_trace(trace_dir / "lte_up.csv", synthetic_trace(8.0, cv=0.6, corr_s=5.0, duration_s=900,
                                                               floor_mbps=0.2, seed=12, name="lte-up"))
    return LinkConfig(link=f"lte,trace={down},up_trace={up},stride=37", **kw)


def cluster_config(method: str, link, out: Path, a):
    from raysplit.budget.policies import AdaptiveConfig
    from raysplit.config import ClusterConfig, SplitConfig, TrainConfig

    e = a.compressed_epochs or 2 * a.epochs  # cheaper epochs: they may run longer to get there
    budgets, epochs = {"none": ((128,), (a.epochs,)), "fixed": ((a.fixed_budget,), (e,)),
                       "deprune": ((a.fixed_budget, 128), (e - 1, 1)),
                       "adaptive": ((128,), (e,))}[method]
    train = TrainConfig(
        method="fixed" if method == "adaptive" else method, split=SplitConfig(model=a.model, seed=a.seed),
        dataset=a.dataset, budgets=budgets, epochs_per_budget=epochs, lr=a.lr, batch_size=a.batch_size,
        train_subset=a.train_subset, test_subset=a.test_subset, out=str(out), progress=False,
        link=link.replace(target_accuracy=None),
    )
    extra = {}
    if method == "adaptive":
        extra = dict(policy="adaptive", adaptive=AdaptiveConfig(target_step_s=a.target_step_s,
                                                                adapt_every=a.adapt_every))
    return ClusterConfig(train=train, clients=a.clients, **extra)


def run_one(method: str, link_name: str, link, tmp: Path, a) -> dict:
    import pyarrow.parquet as pq

    from raysplit.runtime.driver import run_cluster

    out = tmp / link_name / method
    t = time.perf_counter()
    s, _ = run_cluster(cluster_config(method, link, out, a))
    epochs = pq.read_table(out / "epochs.parquet").to_pylist()
    steps = pq.read_table(out / "steps.parquet").to_pandas()
    return {
        "link": link_name, "method": method, "budgets": s.budgets if method != "adaptive" else
        sorted(set(steps["budget"].tolist())),
        "epoch_accuracy": [e["test_accuracy"] for e in epochs], "epoch_sim_time": [e["sim_time"] for e in epochs],
        "final_acc": s.final_test_accuracy, "best_acc": max(e["test_accuracy"] for e in epochs),
        "sim_seconds": s.sim_seconds, "wire_bytes": int(steps["wire_bytes_up"].sum() + steps["wire_bytes_down"].sum()),
        "payload_bytes": s.bytes_up + s.bytes_down, "mean_budget": float(steps["budget"].mean()),
        "wall_s": time.perf_counter() - t, "failed": len(s.failed_clients),
    }


def fill_targets(rows: list[dict]) -> None:
    """Time to none's final accuracy, speedups and byte ratios, per link."""
    for link in {r["link"] for r in rows}:
        mine = [r for r in rows if r["link"] == link]
        base = next((r for r in mine if r["method"] == "none"), None)
        if base is None:
            continue
        target = base["final_acc"]
        for r in mine:
            r["target_acc"] = target
            hit = next((t for acc, t in zip(r["epoch_accuracy"], r["epoch_sim_time"]) if acc >= target), None)
            r["time_to_target_s"] = hit
        b = base["time_to_target_s"]
        for r in mine:
            r["speedup"] = b / r["time_to_target_s"] if r["time_to_target_s"] else None
            r["bytes_vs_none"] = r["wire_bytes"] / base["wire_bytes"]


COLS = [("link", "link", ""), ("method", "method", ""), ("budgets", "budgets", ""), ("final_acc", "final acc", ".3f"),
        ("best_acc", "best acc", ".3f"), ("time_to_target_s", "s to none's final acc", ".1f"),
        ("speedup", "sooner than none", ".1f"), ("sim_seconds", "emulated s (whole run)", ".1f"),
        ("wire_bytes", "wire bytes", ",d"), ("bytes_vs_none", "bytes vs none", ".3f")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 clients, digits, 2 epochs, 2 methods x 2 links")
    ap.add_argument("--links", default=",".join(LINKS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--model", default="vgg_small")
    ap.add_argument("--train-subset", type=int, default=4096)
    ap.add_argument("--test-subset", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=4, help="none's epochs (its final accuracy is the target)")
    ap.add_argument("--compressed-epochs", type=int, default=0,
                    help="the compressed methods' epochs, at most (default 2 x --epochs; deprune: all but the last "
                         "at --fixed-budget, the last at 128)")
    ap.add_argument("--fixed-budget", type=int, default=4, help="fixed's B, and deprune's first budget (then 128)")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--target-step-s", type=float, default=0.3, help="the adaptive policy's step-time target")
    ap.add_argument("--adapt-every", type=int, default=4)
    ap.add_argument("--device-gflops", type=float, default=50.0)
    ap.add_argument("--server-gflops", type=float, default=1000.0, help="a GPU shard (assumption)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.quick:
        a.clients, a.dataset, a.train_subset, a.test_subset, a.epochs, a.compressed_epochs = 2, "digits", 256, 64, 1, 2
        a.links = a.links if a.links != ",".join(LINKS) else "wifi,lte-trace"
        a.methods = a.methods if a.methods != ",".join(METHODS) else "none,adaptive"
    links = [x for x in a.links.split(",") if x]
    methods = [x for x in a.methods.split(",") if x]
    for x in links:
        if x not in LINKS:
            ap.error(f"--links: unknown link {x!r}; choose from {', '.join(LINKS)}")
    for x in methods:
        if x not in METHODS:
            ap.error(f"--methods: unknown method {x!r}; choose from {', '.join(METHODS)}")
    out_dir = a.out_dir or C.RESULTS
    machine = C.machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="raysplit-bench-tta-"))
    rows = []
    import ray

    C.ray_init_quiet()
    try:
        for link_name in links:
            link = link_config(link_name, Path(out_dir) / "traces" if not a.quick else tmp, a)
            for method in methods:
                print(f"- {link_name} / {method} ...", flush=True)
                row = C.retry_on_ray_failure(run_one, method, link_name, link, tmp, a)
                rows.append(row)
                print(f"  final acc {row['final_acc']:.3f}, emulated {row['sim_seconds']:.1f} s, "
                      f"{row['wire_bytes'] / 1e6:.1f} MB on the wire, wall {row['wall_s']:.0f} s", flush=True)
    finally:
        ray.shutdown()
    fill_targets(rows)
    md = C.md_table(rows, COLS)
    print(md)
    C.write_results(NAME, {"machine": machine, "args": vars(a), "rows": rows, "when": C.now_iso()},
                    f"# {NAME}\n\n{md}\n", out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
