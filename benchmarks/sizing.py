"""What the sizing model (tools/sizing.py) needs, measured: client compute per sample,
shard samples/s, and memory per client process, per hosted client and per idle client.

Everything runs the job's defaults (``jobs/deprune.py``: vgg_small on Fashion-MNIST,
batch 32, float32 codec) through the real client and server halves, with one torch
thread, as a cloud node runs them (one thread per client process, one per CPU shard):

* client: CPU-seconds (``time.thread_time``) of the client's forward (head, compressor,
  top-B, encode) and backward (decode, backward, SGD step) per training sample, at the
  schedule's budgets;
* shard: CPU-seconds per sample of the server's merged step (decode, decompressor, tail,
  loss, backward, SGD, encode) with m client micro-batches merged, m = 1, 4, 16, 32
  (a loaded shard merges up to --max-merge 32); samples/s = 1 / that;
* memory, in a fresh interpreter that imports Ray and torch as a client actor does:
  private (USS) memory after the imports (a worker process), after one client is built
  and has trained, and per further client; the same in the real runtime: the USS of a
  client actor process (ClientHost on Ray) hosting 1 and 1 + --extra-clients clients
  after a short run (each hosted client adds its compute thread, data share, loop and
  buffers); and the compact state of an idle client (head, compression module,
  optimizer momentum, RNG: numpy bytes), which is what a virtual client keeps while it
  is not materialised.

    python benchmarks/sizing.py                 # ~1 min
    python benchmarks/sizing.py --device cuda   # the shard figures on a GPU, where there is one
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "sizing"

MEMORY_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import psutil
def mem():
    m = psutil.Process().memory_full_info()
    return {"uss_mib": m.uss / 2**20, "pss_mib": m.pss / 2**20}
import ray, torch
torch.set_num_threads(1)
out = {"worker": mem()}
from raysplit.config import TrainConfig
from raysplit.training.setup import prepare
from raysplit.training.client import SplitClient
from raysplit.training.server import SplitServer
from raysplit.data import batches
prep = prepare(TrainConfig(train_subset=2048, test_subset=100, progress=False))
split, plan = prep.cfg.split, prep.plan
server = SplitServer(split, 0, plan=plan)
def train(c, steps=4):
    c.set_budget(plan.phases[0].budget)
    for x, y in batches(prep.train, 32, shuffle=True, seed=0, epoch=0, max_batches=steps):
        (res,) = server.train_step([c.forward(x, y)], 0.01, 0)
        c.backward(res.grad)
server_only = mem()
clients = [SplitClient(split, 0)]
train(clients[0])
out["first_client"] = mem()
out["server_mib"] = server_only["uss_mib"] - out["worker"]["uss_mib"]
extra = int(sys.argv[2])
for i in range(extra):
    clients.append(SplitClient(split, i + 1))
    train(clients[-1])
out["more_clients"] = mem()
out["extra"] = extra
import numpy as np
def nbytes(v):
    if isinstance(v, dict):
        return sum(nbytes(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return sum(nbytes(x) for x in v)
    if isinstance(v, torch.Tensor):
        return v.numel() * v.element_size()
    if isinstance(v, np.ndarray):
        return v.nbytes
    return 8
out["state_bytes"] = nbytes(clients[0].state_dict())
out["modules_bytes"] = nbytes(clients[0].modules_state())
print(json.dumps(out))
"""


def measure_compute(device: str, steps: int, merges: list[int]) -> dict:
    import torch

    from raysplit.config import TrainConfig
    from raysplit.data import batches
    from raysplit.training.client import SplitClient
    from raysplit.training.server import SplitServer
    from raysplit.training.setup import prepare

    torch.set_num_threads(1)
    prep = prepare(TrainConfig(train_subset=4096, test_subset=100, progress=False))
    split, plan = prep.cfg.split, prep.plan
    server = SplitServer(split, 0, device, plan=plan)
    clients = [SplitClient(split, i) for i in range(max(merges))]
    out: dict = {"batch_size": prep.cfg.batch_size, "model": split.model, "dataset": prep.cfg.dataset,
                 "image_size": prep.cfg.image_size, "codec": split.codec, "shard_device": str(server.device),
                 "client": {}, "shard": {}}
    data = list(batches(prep.train, prep.cfg.batch_size, shuffle=True, seed=0, epoch=0, max_batches=steps + 2))
    for phase in plan.phases:
        budget = phase.budget
        for c in clients:
            c.set_budget(budget)
        # client: forward + backward CPU time on this thread, the server in between
        c = clients[0]
        cpu = n = 0.0
        for i, (x, y) in enumerate(data):
            t = time.thread_time()
            up = c.forward(x, y)
            cpu_f = time.thread_time() - t
            (res,) = server.train_step([up], 0.01, phase.index)
            t = time.thread_time()
            c.backward(res.grad)
            if i >= 2:  # the first steps warm up allocators and kernels
                cpu += cpu_f + time.thread_time() - t
                n += len(y)
        out["client"][str(budget)] = {"cpu_s_per_sample": cpu / n, "samples_per_cpu_s": n / cpu}
        # shard: merged steps of m micro-batches
        per_m = {}
        for m in merges:
            msgs = []
            for x, y in data[:3]:
                msgs.append([clients[j].forward(x, y) for j in range(m)])
                for cl in clients[:m]:
                    cl.abort_step()  # only the messages are needed
            sync = torch.cuda.synchronize if server.device.type == "cuda" else (lambda: None)
            t_cpu, t_wall, samples = 0.0, 0.0, 0
            for k, bufs in enumerate(msgs):
                sync()
                t, w = time.thread_time(), time.perf_counter()
                server.train_step(bufs, 0.01, phase.index)
                sync()
                if k >= 1:
                    t_cpu += time.thread_time() - t
                    t_wall += time.perf_counter() - w
                    samples += m * prep.cfg.batch_size
            per_m[str(m)] = {"cpu_s_per_sample": t_cpu / samples, "wall_s_per_sample": t_wall / samples,
                             "samples_per_s": samples / t_wall}
        out["shard"][str(budget)] = per_m
    return out


def measure_memory(extra: int) -> dict:
    r = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(C.ROOT), str(extra)], capture_output=True,
                       text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    m = json.loads(r.stdout.strip().splitlines()[-1])
    m["per_more_client_uss_mib"] = (m["more_clients"]["uss_mib"] - m["first_client"]["uss_mib"]) / m["extra"]
    m["first_client_uss_mib"] = m["first_client"]["uss_mib"] - m["worker"]["uss_mib"] - m["server_mib"]
    m["state_mib"] = m["state_bytes"] / 2**20
    return m


def measure_hosted(counts: list[int], max_batches: int = 4) -> dict:
    """USS of a real client actor process (the runtime's ClientHost on Ray) hosting k
    clients after they trained, for each k: what a hosted client costs with its thread,
    data share, loop and buffers."""
    import psutil
    import ray

    from raysplit.config import ClusterConfig, TrainConfig
    from raysplit.runtime.driver import Cluster

    out = {}
    C.ray_init_quiet(num_cpus=2)
    try:
        for k in counts:
            tc = TrainConfig(train_subset=256 * k, test_subset=64, epochs_per_budget=(1, 1), max_batches=max_batches,
                             out=str(Path(C.RESULTS.parent / "results" / "_sizing_tmp")), progress=False)
            cl = Cluster(ClusterConfig(train=tc, clients=k, clients_per_actor=k))
            cl.start()
            try:
                cl.run()
                pid = cl.host_info[0]["pid"]
                out[str(k)] = psutil.Process(pid).memory_full_info().uss / 2**20
            finally:
                cl.stop()
    finally:
        ray.shutdown()
        import shutil

        shutil.rmtree(C.RESULTS.parent / "results" / "_sizing_tmp", ignore_errors=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the shard computes")
    ap.add_argument("--steps", type=int, default=12, help="timed steps per budget")
    ap.add_argument("--merges", default="1,4,16,32", help="micro-batches merged per shard step")
    ap.add_argument("--extra-clients", type=int, default=8, help="further hosted clients for the per-client memory")
    ap.add_argument("--hosted-batches", type=int, default=4, help="steps per epoch of the hosted-memory runs")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 3 steps, merges 1,2, 1 extra client, 1 step per epoch in the hosted runs")
    ap.add_argument("--out-dir", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.quick:
        a.steps, a.merges, a.extra_clients, a.hosted_batches = 3, "1,2", 1, 1
    merges = [int(m) for m in a.merges.split(",")]
    compute = measure_compute(a.device, a.steps, merges)
    memory = measure_memory(a.extra_clients)
    hosted = measure_hosted([1, 1 + a.extra_clients], a.hosted_batches)
    memory["hosted_uss_mib"] = hosted
    k = sorted(int(x) for x in hosted)
    memory["per_hosted_client_uss_mib"] = (hosted[str(k[-1])] - hosted[str(k[0])]) / (k[-1] - k[0])
    memory["first_hosted_client_uss_mib"] = hosted[str(k[0])] - memory["worker"]["uss_mib"]
    rows = []
    for budget, c in compute["client"].items():
        for m, s in compute["shard"][budget].items():
            rows.append({"budget": int(budget), "merged": int(m),
                         "client_ms_per_sample": 1000 * c["cpu_s_per_sample"],
                         "client_sps_per_core": c["samples_per_cpu_s"],
                         "shard_ms_per_sample": 1000 * s["wall_s_per_sample"], "shard_sps": s["samples_per_s"]})
    cols = [("budget", "budget B", "d"), ("merged", "merged micro-batches", "d"),
            ("client_ms_per_sample", "client CPU ms/sample", ".2f"), ("client_sps_per_core", "client samples/core-s", ".0f"),
            ("shard_ms_per_sample", f"shard ms/sample ({compute['shard_device']})", ".3f"),
            ("shard_sps", "shard samples/s", ".0f")]
    mem_rows = [{"what": k, "mib": v} for k, v in (
        ("worker process (python + ray + torch imported), USS", memory["worker"]["uss_mib"]),
        ("first client, built and trained (bare process), USS", memory["first_client_uss_mib"]),
        ("each further client (bare process), USS", memory["per_more_client_uss_mib"]),
        ("client actor process hosting 1 client (Ray runtime), USS", memory["hosted_uss_mib"][str(k[0])]),
        (f"each further client it hosts ({k[0]} vs {k[-1]}), USS", memory["per_hosted_client_uss_mib"]),
        ("a shard's server half (built, trained), USS", memory["server_mib"]),
        ("idle client's compact state (numpy bytes)", memory["state_mib"]))]
    table = C.text_table(rows, cols) + "\n\n" + C.text_table(mem_rows, [("what", "memory", ""), ("mib", "MiB", ".2f")])
    print(table)
    machine = C.machine_info()
    md = (f"# Sizing inputs ({compute['model']}, {compute['dataset']} {compute['image_size']} px, batch "
          f"{compute['batch_size']}, codec {compute['codec']}, 1 torch thread)\n\n"
          f"Machine: {machine['cpu_count']} cores, shared; created {C.now_iso()}.\n\n"
          + C.md_table(rows, cols) + "\n\n" + C.md_table(mem_rows, [("what", "memory", ""), ("mib", "MiB", ".2f")]))
    result = {"benchmark": NAME, "created": C.now_iso(), "machine": machine, "compute": compute, "memory": memory,
              "rows": rows}
    C.write_results(NAME, result, md, a.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
