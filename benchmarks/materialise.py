"""What it costs to materialise and park one virtual client (``raysplit.runtime.virtual``),
with nothing else running: ``load`` (a slot becomes a parked client: weights, momentum,
budget, stage, RNG) and ``park`` (the slot's client back to numpy).

The scaling benchmark reports the same two figures from inside a run ("materialise ms",
"park ms"): there they include the wait for the slot's compute thread and for the GIL
among a process's client threads. This measures the work alone, as CPU time (process
time) and wall time per call, median over repeats, for the job's default network
(vgg_small on 1x28x28 Fashion-MNIST, B = 4) after one training step (so the momentum
buffers exist, as for every client that trained).

    python benchmarks/materialise.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common as C  # noqa: E402

NAME = "materialise"


def measure(fn, calls: int, repeats: int) -> tuple[float, float]:
    """(CPU ms, wall ms) per call: medians over ``repeats`` runs of ``calls`` calls."""
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(calls):
            fn()
        cpu.append(1000 * (time.process_time() - c0) / calls)
        wall.append(1000 * (time.perf_counter() - w0) / calls)
    return statistics.median(cpu), statistics.median(wall)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="vgg_small")
    ap.add_argument("--calls", type=int, default=100, help="calls per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out-dir", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.calls < 1 or a.repeats < 1:
        ap.error(f"--calls and --repeats must be >= 1, got {a.calls}, {a.repeats}")

    import torch

    from raysplit.config.split import SplitConfig
    from raysplit.runtime.virtual import load, park
    from raysplit.training.client import SplitClient
    from raysplit.training.loop import train_step
    from raysplit.training.server import SplitServer
    from raysplit.transport.inprocess import InProcessTransport

    torch.set_num_threads(1)
    cfg = SplitConfig(model=a.model, input_shape=(1, 28, 28), num_classes=10, torch_threads=1, seed=0)
    client = SplitClient(cfg, 0)
    client.set_budget(4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 32).astype(np.int64)
    train_step(client, InProcessTransport(SplitServer(cfg)), x, y, lr=0.05, phase=0)  # momentum buffers
    parked = park(client)
    rows = []
    for name, fn in (("park", lambda: park(client)), ("load", lambda: load(client, 1, parked))):
        cpu, wall = measure(fn, a.calls, a.repeats)
        rows.append({"call": name, "cpu_ms": cpu, "wall_ms": wall})
    state = {"tensors": len(parked.modules), "parameters": int(sum(np.asarray(v).size for v in parked.modules.values())),
             "momentum_buffers": len(parked.momentum), "parked_kib": parked.private_bytes() / 1024}
    cols = [("call", "call", ""), ("cpu_ms", "CPU ms", ".3f"), ("wall_ms", "wall ms", ".3f")]
    print(C.text_table(rows, cols))
    print(f"state: {state['tensors']} tensors, {state['parameters']:,} values, {state['momentum_buffers']} momentum "
          f"buffers, {state['parked_kib']:.0f} KiB parked")
    md = (f"# {__doc__.splitlines()[0]}\n\n{a.model}, 1 torch thread, {a.repeats} x {a.calls} calls (median); "
          f"machine {C.machine_info().get('cpu_count', '?')} cores; created {C.now_iso()}\n\n" + C.md_table(rows, cols))
    C.write_results(NAME, {"benchmark": NAME, "created": C.now_iso(), "machine": C.machine_info(),
                           "model": a.model, "state": state, "rows": rows}, md, a.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
