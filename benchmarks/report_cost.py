"""What report.html costs at the end of a run: seconds to read the run directory and
write the page, by the size of the steps table.

Run directories are written through the real RunWriter in the job's shapes: the default
`jobs/deprune.py --clients 32` run (32 clients x 8 steps x 3 epochs = 768 step rows), the
full Fashion-MNIST at batch 32 over 8 clients (8 x 234 x 3 = 5,616 rows) and a long run
(8 x 1,875 x 20 = 300,000 rows). Each size
is timed --repeats times in a fresh process (matplotlib's import included, as at the end
of a job); the median is reported.

    python benchmarks/report_cost.py
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import ROOT, machine_info, md_table, text_table, write_results  # noqa: E402

SIZES = {  # name: (clients, steps per client per epoch, epochs)
    "job-default-32": (32, 8, 3),  # jobs/deprune.py --clients 32 with its defaults
    "full-fmnist-8": (8, 234, 3),  # 60,000 images / 8 clients / batch 32
    "long-8": (8, 1875, 20),
}


def make_run(out: Path, clients: int, steps: int, epochs: int) -> int:
    from raysplit.config import SplitConfig
    from raysplit.records.rows import EvalRow, StepRow, Summary
    from raysplit.records.writer import RunWriter

    w = RunWriter(out, config={"clients": clients}, clients=list(range(clients)), split=SplitConfig(),
                  method="deprune", flush_seconds=1e9)
    t, n = 5.0, 0
    for e in range(epochs):
        budget = 4 if e < epochs - 1 else 128
        for b in range(steps):
            rows = []
            for c in range(clients):
                t += 0.01
                rows.append(StepRow(run="r", tenant="t", client=c, shard=0, epoch=e, batch=b, step=e * steps + b + 1, phase=0,
                                    budget=budget, lr=0.01, samples=32, bytes_up=1029 * budget // 4,
                                    bytes_down=1025 * budget // 4, loss=1.0, prune_loss=0.0, correct=20, time=t,
                                    latency=0.1, forward_s=0.02, exchange_s=0.05, queue_s=0.01, server_s=0.03,
                                    backward_s=0.03, merged=2))
            w.put(rows)
            n += len(rows)
        w.put([EvalRow(run="r", tenant="t", client=c, epoch=e, phase=0, budget=budget, lr=0.01, correct=50,
                       total=64, bytes_up=100, seconds=0.1, time=t) for c in range(clients)])
    w.flush()
    summary = Summary(run="r", tenant="t", method="deprune", dataset="fashion-mnist", model="vgg_small",
                      split_layer=4, budgets=[4, 128], epochs_per_budget=[epochs - 1, 1], codec="float32",
                      final_test_accuracy=0.78, bytes_up=0, bytes_down=0, samples=n * 32, steps=n,
                      wall_seconds=t, startup_seconds=5.0, train_seconds=t - 5, train_samples=0, test_samples=0,
                      epochs=epochs, clients=clients)
    (out / "summary.json").write_text(__import__("json").dumps(summary.to_dict()))
    return n


def time_report(run: Path) -> float:
    code = ("import time; t = time.perf_counter(); from raysplit.report import write_report; "
            f"write_report({str(run)!r}); print(time.perf_counter() - t)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return float(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sizes", default=",".join(SIZES), help="comma-separated names from: " + ", ".join(SIZES))
    p.add_argument("--out-dir", default=None)
    a = p.parse_args(argv)
    names = [s.strip() for s in a.sizes.split(",") if s.strip()]
    for s in names:
        if s not in SIZES:
            p.error(f"--sizes: {s!r} is not one of: {', '.join(SIZES)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            run = Path(tmp) / name
            n = make_run(run, *SIZES[name])
            secs = [time_report(run) for _ in range(a.repeats)]
            rows.append({"size": name, "step_rows": n, "seconds_median": statistics.median(secs), "seconds": secs,
                         "report_kib": (run / "report.html").stat().st_size / 1024})
            print(f"{name}: {n:,} step rows, report in {statistics.median(secs):.2f} s")
    cols = [("size", "run", ""), ("step_rows", "step rows", ","), ("seconds_median", "report.html s (median)", ".2f"),
            ("report_kib", "size KiB", ".0f")]
    print(text_table(rows, cols))
    md = md_table(rows, cols)
    write_results("report_cost", {"machine": machine_info(), "repeats": a.repeats, "rows": rows,
                                  "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}, md,
                  Path(a.out_dir) if a.out_dir else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
