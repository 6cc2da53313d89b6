"""NAIR vs the original split, a CLIO-style baseline and the compression module, accuracy
against the transmission deadline (the layout of Xiao et al.'s Table II), with the
ablation (Table III): NAIR without the penalty, without the importance weights, without
either. Runs ``jobs/nair.py``'s pipeline (``raysplit.nair.run``) with every variant.

Here: the embedded Fashion-MNIST (no CIFAR-10 on this machine), ``vgg_small`` split after
[64, M, 128, M] (128 channels at 8x8), 8 slices of 16 channels, 250 kbit/s (the paper's
link), float32 on the wire, every test image one request.

    python benchmarks/nair.py              # ~90 min on the shared 2-core machine
    python benchmarks/nair.py --quick      # smoke run
    # the paper's setting, for users with CIFAR-10 and a GPU:
    python benchmarks/nair.py --model mobilenet_v2 --dataset cifar10 --data-dir ~/data/cifar10 \\
        --train-subset all --test-subset all --original-epochs 200 --epochs 20 --slices 12 --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import _common as C  # noqa: E402

NAME = "nair"
VARIANTS = ("original", "plain", "clio", "nair", "nair-no-penalty", "nair-no-weights", "nair-neither", "module")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="vgg_small")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--train-subset", default="8192")
    ap.add_argument("--test-subset", default="2000")
    ap.add_argument("--original-epochs", type=int, default=4)
    ap.add_argument("--original", default=None,
                    help="model file of a trained original to start from (jobs/nair.py's models/original.pt) instead "
                         "of training one for --original-epochs")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--penalty", type=float, default=0.1)
    ap.add_argument("--link", default="250kbit")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="smoke run: digits, tiny subsets, 1 epoch each")
    ap.add_argument("--keep", type=Path, default=None, help="keep the run directory here")
    ap.add_argument("--out-dir", type=Path, default=None)
    a = ap.parse_args(argv)

    from raysplit import nair
    from raysplit.config import SplitConfig
    from raysplit.config.nair import NairConfig

    def subset(v):
        return None if str(v) == "all" else int(v)

    kw = dict(dataset=a.dataset, data_dir=a.data_dir, train_subset=subset(a.train_subset),
              test_subset=subset(a.test_subset), original_epochs=a.original_epochs, epochs=a.epochs,
              slices=a.slices, penalty=a.penalty, link=a.link, variants=tuple(a.variants.split(",")),
              device=a.device)
    if a.original:
        kw["original"] = a.original
    if a.quick:
        kw.update(dataset="digits", image_size=16, train_subset=192, test_subset=64, original_epochs=1, epochs=1,
                  slices=4, batch_size=32)
    tmp = Path(tempfile.mkdtemp(prefix="raysplit-bench-nair-"))
    out = a.keep or (tmp / "run")
    try:
        cfg = NairConfig(out=str(out), **kw)
        split = SplitConfig(model=a.model, use_module=False, torch_threads=a.threads)
        summary = nair.run(cfg, split, log=lambda *m: print(*m, flush=True))
        rows = json.loads((out / "deadlines.json").read_text())
        table = (out / "table.md").read_text()
        finetune = json.loads((out / "finetune.json").read_text())
        png = out / "accuracy_latency.png"
        d = a.out_dir or C.RESULTS
        d.mkdir(parents=True, exist_ok=True)
        if png.exists():
            shutil.copy(png, d / "nair_accuracy_latency.png")
    finally:
        if a.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)

    names = [n for n in cfg.variants if n in summary["no_deadline_accuracy"]]
    acc = summary["accuracy"]
    deadlines = summary["deadlines_s"]
    # the tightest deadline at which any method answers a request
    answered = {(r["method"], r["deadline_s"]): r["answered"] for r in rows}
    tight = next((i for i, dl in enumerate(deadlines) if any(answered.get((n, dl), 0) > 0 for n in names)), None)
    checks = {}
    if tight is not None and "nair" in names and "clio" in names:
        checks["tightest_deadline_s"] = deadlines[tight]
        checks["nair_at_tightest"] = acc["nair"][tight]
        checks["clio_at_tightest"] = acc["clio"][tight]
        checks["nair_beats_clio_at_tightest"] = acc["nair"][tight] > acc["clio"][tight]
    if "nair" in names and "original" in names:
        nd = summary["no_deadline_accuracy"]
        checks["no_deadline_nair_minus_original_points"] = 100 * (nd["nair"] - nd["original"])
        checks["nair_within_half_a_point_of_original"] = nd["nair"] >= nd["original"] - 0.005
        if "plain" in nd:
            checks["no_deadline_nair_minus_plain_points"] = 100 * (nd["nair"] - nd["plain"])
    result = {"benchmark": NAME, "created": C.now_iso(), "setup": {**cfg.to_dict(), "model": a.model,
                                                                    "quick": a.quick},
              "machine": C.machine_info(), "summary": summary, "rows": rows, "finetune": finetune, "checks": checks}
    md = (f"# NAIR (Table II layout)\n\nCreated {C.now_iso()}.\n\n{table}\n"
          + "\n".join(f"- {k}: {v:.4g}" if isinstance(v, float) and not isinstance(v, bool) else f"- {k}: {v}"
                      for k, v in checks.items()) + "\n")
    print(table)
    for k, v in checks.items():
        print(f"{k}: {v}")
    C.write_results(NAME, result, md, a.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
