"""BottleFit on Fashion-MNIST in the layout of the paper's Tables I/II, on the cluster.

For every bottleneck size C in --channels, with one teacher (the model without compression,
``--method none``) trained first and the same data, seed, cluster and total epochs:

* scratch: the bottleneck-injected student trained from random weights with cross-entropy
  (``--method none --bottleneck C``);
* KD only: the student, its later layers from the teacher, trained with KD (eq. 6) for all
  the epochs (``--method kd``);
* BottleFit: stage 1 GHND (eq. 4, later layers frozen, Adam), stage 2 KD (SGD)
  (``--method bottlefit``), and with the encoder frozen in stage 2 (``bottlefit-fe``);
* raysplit's compression module at the same bytes: ``--method fixed --budgets C`` sends C
  channels of the same size as the bottleneck.

Each trained model is then scored over split inference with the wire encoding it trained
with and post-training quantised (BQ, ``--bq-codec``: uint8, one scale and zero point per
tensor; for the module's per-channel int8, ``--module-bq-codec``). Accuracy is on the test
subset; bytes are the exact inference messages per sample (what the paper's "transferred
data size" measures); training bytes per sample (which include the teacher's activation
during distillation) are in the JSON.

    python benchmarks/bottlefit.py                         # ~40 min on 2 cores (cluster, 2 clients)
    python benchmarks/bottlefit.py --stage-epochs 10       # the recipe's 10 + 10 epochs
    python benchmarks/bottlefit.py --quick --local         # smoke run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _runs as R  # noqa: E402

NAME = "bottlefit"
QUICK = dict(channels="3", teacher_epochs=1, stage_epochs=1, train_subset=128, test_subset=64, batch_size=16,
             dataset="digits")
METHODS = ("scratch", "kd", "bottlefit", "bottlefit-fe", "module")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--channels", default="3,12", help="bottleneck sizes C")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--teacher-epochs", type=int, default=10)
    ap.add_argument("--teacher-lr", type=float, default=0.01)
    ap.add_argument("--stage-epochs", type=int, default=5,
                    help="epochs of each BottleFit stage (the recipe: 10; 5 fits 2 cores); one-stage methods train 2x")
    ap.add_argument("--scratch-lr", type=float, default=0.01,
                    help="lr of the student from scratch and of the module (SGD, no decay)")
    ap.add_argument("--bq-codec", default="uint8")
    ap.add_argument("--module-bq-codec", default="int8")
    R.add_run_options(ap, NAME, lr=0.001)  # --lr: the recipe's of both stages and of KD only
    a = R.parse(ap, argv, QUICK)
    methods = a.methods.split(",")
    for m in methods:
        if m not in METHODS:
            ap.error(f"unknown method {m!r}; allowed: {', '.join(METHODS)}")

    from raysplit.training import bq

    common = [*R.job_args(a), "--save-model"]  # later --lr options win
    total = 2 * a.stage_epochs
    runner = R.Runner(["--clients", str(a.clients), "--shards", str(a.shards)], local=a.local, out_dir=a.runs_dir,
                      address=a.address)
    rows, runs = [], []

    def scored(name, run, c, codecs):
        model, test = a.runs_dir / name / run.summary["models"][-1], bq.test_set(run.config)
        s = [bq.score(model, test, k, batch_size=a.batch_size, evaluate_mode=run.config.evaluate) for k in codecs]
        r = {"name": name, "channels": c, "accuracy": s[0].accuracy, "bytes_per_sample": s[0].bytes_per_sample,
             "run_final_acc": run.summary["final_test_accuracy"],
             "train_bytes_per_sample": (run.summary["bytes_up"] + run.summary["bytes_down"]) / run.summary["samples"],
             "command": run.command, "accuracy_per_epoch": run.accuracy}
        if len(s) > 1:
            r.update(bq_codec=s[1].codec, bq_accuracy=s[1].accuracy, bq_bytes_per_sample=s[1].bytes_per_sample,
                     bq_saving=1 - s[1].bytes_per_sample / s[0].bytes_per_sample,
                     bq_points=100 * (s[1].accuracy - s[0].accuracy))
        runs.append(run)
        rows.append(r)
        return r

    try:
        t = runner.run("teacher", ["--method", "none", "--epochs-per-budget", str(a.teacher_epochs), "--lr",
                                   str(a.teacher_lr), *common])
        teacher_file = str(a.runs_dir / "teacher" / t.summary["models"][-1])
        scored("teacher", t, None, ["float32"])
        for c in (int(v) for v in a.channels.split(",")):
            student = ["--bottleneck", str(c), *common]
            todo = {
                "scratch": ["--method", "none", "--epochs-per-budget", str(total), "--lr", str(a.scratch_lr), *student],
                "kd": ["--method", "kd", "--teacher", teacher_file, "--epochs-per-budget", str(total), "--lr", str(a.lr),
                       *student],
                "bottlefit": ["--method", "bottlefit", "--teacher", teacher_file, "--epochs-per-budget",
                              str(a.stage_epochs), "--lr", str(a.lr), *student],
                "bottlefit-fe": ["--method", "bottlefit-fe", "--teacher", teacher_file, "--epochs-per-budget",
                                 str(a.stage_epochs), "--lr", str(a.lr), *student],
                "module": ["--method", "fixed", "--budgets", str(c), "--epochs-per-budget", str(total), "--lr",
                           str(a.scratch_lr), *common],
            }
            for m in methods:
                name = f"{m}_{c}ch"
                bq_codec = a.module_bq_codec if m == "module" else a.bq_codec
                r = scored(name, runner.run(name, todo[m]), c, ["float32", bq_codec])
                r["method"] = m
    finally:
        runner.close()
    teacher_acc = rows[0]["accuracy"]
    rows[0]["method"] = "teacher (no compression)"
    for r in rows:
        r["vs_teacher_points"] = 100 * (r["accuracy"] - teacher_acc)
        if "bq_accuracy" in r:
            r["bq_vs_teacher_points"] = 100 * (r["bq_accuracy"] - teacher_acc)
    cols = [("method", "method", ""), ("channels", "C", ""), ("accuracy", "acc (float32)", ".4f"),
            ("vs_teacher_points", "vs teacher", "+.2f"), ("bytes_per_sample", "B/sample", ",.1f"),
            ("bq_codec", "BQ", ""), ("bq_accuracy", "acc with BQ", ".4f"), ("bq_points", "BQ change (points)", "+.2f"),
            ("bq_bytes_per_sample", "B/sample with BQ", ",.1f"), ("bq_saving", "BQ saves", ".3f"),
            ("train_bytes_per_sample", "training B/sample", ",.0f")]
    print()
    print(C.text_table(rows, cols))
    command, where = R.command(NAME, argv), R.where(a)
    md = (f"# BottleFit vs scratch, KD only and the compression module\n\n{a.model} on {a.dataset} ({a.train_subset} "
          f"train / {a.test_subset} test samples), batch {a.batch_size}, {where}. Teacher: {a.teacher_epochs} epochs, "
          f"SGD lr {a.teacher_lr}. BottleFit: {a.stage_epochs} + {a.stage_epochs} epochs (GHND with Adam, then KD with "
          f"SGD), lr {a.lr}, x0.1 after half of each stage; KD only: {total} epochs at lr {a.lr} (x0.1 after half); "
          f"scratch and module: {total} epochs SGD lr {a.scratch_lr}. Accuracy and bytes: split inference of the saved "
          f"model on the test subset (bytes = inference messages per sample).\n\n"
          + C.md_table(rows, cols) + f"\n\nReproduce: `{command}`\n\nCreated {C.now_iso()}.\n")
    result = {**R.header(NAME, command, a), "rows": rows}
    C.write_results(NAME, result, md, a.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
