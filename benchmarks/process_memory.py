"""What one client process costs in memory, stage by stage.

Every client actor is its own process, so 32 one-per-actor clients pay this 32 times.
A fresh interpreter (one per ``--python``, e.g. a venv with another torch build) imports
Ray, then torch, then builds a SplitClient and a SplitServer and trains a few steps; after
each stage it records its private anonymous memory (what no other process shares), PSS
and the number of loaded modules, and whether torch._dynamo or sympy got imported. It
also names the largest anonymous regions that sit next to a shared library (a library's
.bss, which it fills at load time).

    python benchmarks/process_memory.py
    python benchmarks/process_memory.py --python /other/venv/bin/python   # compare a torch build
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "process_memory"

# Runs in the child interpreter. Stages after "torch" need raysplit on sys.path.
CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])

def rollup():
    d = {}
    for line in open("/proc/self/smaps_rollup"):
        p = line.split()
        if len(p) >= 3 and p[-1] == "kB":
            d[p[0].rstrip(":")] = int(p[1]) / 1024
    return {"anon_mib": d["Anonymous"], "pss_mib": d["Pss"], "modules": len(sys.modules),
            "dynamo": any(m.startswith("torch._dynamo") for m in sys.modules),
            "sympy": "sympy" in sys.modules}

def bss_regions(min_mib=8.0):
    # an anonymous mapping right after a shared library's mappings is that library's .bss
    out, prev_lib, cur = [], None, None
    for line in open("/proc/self/smaps"):
        p = line.split()
        if "-" in p[0] and not p[0].endswith(":"):  # a mapping's header line
            lib = p[5] if len(p) > 5 and ".so" in p[5] else None
            cur = None if lib or len(p) > 5 else prev_lib  # anonymous: remember whose neighbour it is
            prev_lib = lib
            continue
        if p[0] == "Anonymous:" and cur and int(p[1]) / 1024 >= min_mib:
            out.append({"after": cur.rsplit("/", 1)[-1], "anon_mib": int(p[1]) / 1024})
    return out

stages = []
import numpy
stages.append(("python + numpy", rollup()))
try:
    import ray
    stages.append(("+ import ray", rollup()))
except ImportError:
    stages.append(("(ray not installed)", rollup()))
import torch
torch.set_num_threads(1)
stages.append(("+ import torch", rollup()))
bss = bss_regions()
import numpy as np
try:
    from raysplit.config import SplitConfig
    from raysplit.training.client import SplitClient
    from raysplit.training.server import SplitServer
except ImportError as e:
    print(json.dumps({"torch": torch.__version__, "stages": stages, "bss": bss, "note": f"raysplit: {e}"}))
    raise SystemExit(0)
cfg = SplitConfig(model="vgg_small", torch_threads=1)
client = SplitClient(cfg)
client.set_budget(4)
stages.append(("+ SplitClient built", rollup()))
server = SplitServer(cfg)
x = np.random.default_rng(0).random((32, 1, 32, 32), dtype=np.float32)
for _ in range(3):
    (res,) = server.train_step([client.forward(x, np.arange(32) % 10)], 0.01)
    client.backward(res.grad)
stages.append(("+ SplitServer, 3 steps", rollup()))
# What raysplit avoids, for comparison: a torch.optim.Optimizer (building one imports
# torch._dynamo; raysplit's SGD holds its own parameter groups and calls torch's functional
# torch.optim.sgd.sgd) and a backward with an explicit gradient tensor (autograd imports
# sympy to check its shape).
w = torch.ones(3, requires_grad=True)
(w * 2).backward(torch.ones(3))
stages.append(("+ backward(gradient) (avoided)", rollup()))
torch.optim.SGD(client.modules.parameters(), lr=0.01, momentum=0.9)
stages.append(("+ torch.optim.SGD (avoided)", rollup()))
print(json.dumps({"torch": torch.__version__, "stages": stages, "bss": bss}))
"""


def measure(python: str) -> dict:
    r = subprocess.run([python, "-c", CHILD, str(C.ROOT)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{python}: {r.stderr.strip()[-1500:]}")
    return {"python": python, **json.loads(r.stdout.strip().splitlines()[-1])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", action="append", default=None,
                    help="interpreter(s) to measure (repeatable; default: this one)")
    ap.add_argument("--out-dir", type=Path, default=None)
    a = ap.parse_args(argv)
    results = [measure(p) for p in (a.python or [sys.executable])]
    rows = []
    for res in results:
        base = None
        for stage, m in res["stages"]:
            rows.append({"torch": res["torch"], "stage": stage, "anon": m["anon_mib"],
                         "added": m["anon_mib"] - (base if base is not None else 0.0), "pss": m["pss_mib"],
                         "modules": m["modules"], "dynamo": m["dynamo"], "sympy": m["sympy"]})
            base = m["anon_mib"]
        rows[-len(res["stages"])]["added"] = float("nan")
    cols = [
        ("torch", "torch", ""),
        ("stage", "stage", ""),
        ("anon", "private anon MiB", ".1f"),
        ("added", "added MiB", ".1f"),
        ("pss", "PSS MiB", ".1f"),
        ("modules", "modules", "d"),
        ("dynamo", "torch._dynamo loaded", ""),
        ("sympy", "sympy loaded", ""),
    ]
    table = C.text_table(rows, cols)
    print(table)
    bss_lines = [f"- torch {res['torch']}: " + (", ".join(f"{b['anon_mib']:.1f} MiB after {b['after']}"
                                                             for b in res["bss"]) or "none >= 8 MiB")
                 for res in results]
    print("\nanonymous regions directly after a library's mappings (usually its .bss, filled at load):")
    print("\n".join(bss_lines))
    setup = {
        "what": "one fresh interpreter per --python; private anonymous memory (smaps_rollup Anonymous) after each stage",
        "model": "vgg_small, batch 32, B=4, 1 torch thread",
    }
    md = (
        "# Memory of one client process, stage by stage\n\n"
        f"{setup['what']}; {setup['model']}.\n\n"
        + C.md_table(rows, cols)
        + "\n\nAnonymous regions directly after a library's mappings (usually its .bss, filled at load):\n\n"
        + "\n".join(bss_lines)
        + "\n"
    )
    C.write_results(NAME, {"benchmark": NAME, "setup": setup, "machine": C.machine_info(), "results": results,
                                   "rows": rows}, md, a.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
