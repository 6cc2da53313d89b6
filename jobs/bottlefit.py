"""BottleFit on a Ray cluster: a bottleneck-injected student distilled from its teacher,
then post-training 8-bit bottleneck quantisation (BQ).

    python jobs/bottlefit.py --clients 4 --bottleneck 12              # starts a local Ray
    ray job submit -- python jobs/bottlefit.py --clients 4 --shards 2 --teacher runs/teacher.pt

1. The teacher: the model without compression. Without --teacher, a 'none' run of the same
   model, data and cluster trains it first (--teacher-epochs, --teacher-lr) and saves it
   under <out>/teacher/models/.
2. The student (--method bottlefit: stage 1 GHND with the later layers frozen, Adam; stage 2
   KD, SGD; bottlefit-fe freezes the encoder in stage 2; kd: KD only; none: the student from
   scratch) on the same cluster; --epochs-per-budget gives the epochs of each stage.
3. BQ: the saved student (<out>/models/budget_<C>.pt) is scored over split inference with
   --codec and with --bq-codec (uint8: one scale and zero point per tensor); accuracy and
   bytes per sample go to <out>/bq.json.

Defaults: the CPU-sized VGG split after layer 4 on an 8,192-sample subset of
Fashion-MNIST, a 12-channel bottleneck, 3 teacher epochs, 2 + 2 student epochs at lr
1e-3 (the recipe's 10 + 10 with --epochs-per-budget 10,10), so it finishes in minutes on
2 cores. The teacher's head runs on the clients, its later layers on the shards (README:
BottleFit). Every option can come from --config run.yaml.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # jobs/: the cluster job whose options these are
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import deprune  # noqa: E402
from raysplit.config import ClusterConfig, SplitConfig, TrainConfig  # noqa: E402
from raysplit.config.bottlefit import BottleFitConfig  # noqa: E402
from raysplit.records.summary import format_summary  # noqa: E402
from raysplit.training.methods import get_method  # noqa: E402

DEFAULTS = {"method": "bottlefit", "bottleneck": 12, "epochs_per_budget": "2,2", "lr": 0.001, "out": "runs/bottlefit"}


def parser():
    return deprune.parser("jobs/bottlefit.py", __doc__.split("\n\n")[0], defaults=DEFAULTS,
                          sections=(("bottlefit", BottleFitConfig),))


def configs(p, argv: list[str] | None) -> tuple[BottleFitConfig, ClusterConfig | None, ClusterConfig]:
    """(the job's own options, the teacher's run or None, the student's run). Without
    --teacher the student's names the file the teacher's run will save."""
    values = p.parse(argv)
    job = p.build(BottleFitConfig, values[BottleFitConfig])
    split_v, train_v, cluster_v = values[SplitConfig], values[TrainConfig], values[ClusterConfig]
    teacher_cc = None
    if split_v["teacher"] is None and get_method(train_v["method"]).distills:
        t_split = p.build(SplitConfig, {**split_v, "bottleneck": None})
        t_train = p.build(TrainConfig, {**train_v, "method": "none", "epochs_per_budget": (job.teacher_epochs,),
                                        "lr": job.teacher_lr, "save_model": True,
                                        "out": str(Path(train_v["out"]) / "teacher")}, split=t_split)
        teacher_cc = p.build(ClusterConfig, cluster_v, train=t_train)
        split_v = {**split_v, "teacher": str(Path(t_train.out) / "models" / "teacher.pt")}  # named once trained
    split = p.build(SplitConfig, split_v)
    train = p.build(TrainConfig, {**train_v, "save_model": True}, split=split)  # BQ scores the saved student
    return job, teacher_cc, p.build(ClusterConfig, cluster_v, train=train)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    job, teacher_cc, cc = configs(p, argv)
    from raysplit.runtime.driver import run_cluster
    from raysplit.training import bq

    def train():
        nonlocal cc
        if teacher_cc is not None:
            print(f"[bottlefit] training the teacher ({teacher_cc.train.split.model}, no compression) in "
                  f"{teacher_cc.train.out}", flush=True)
            ts, _ = run_cluster(teacher_cc)
            print(format_summary(ts), flush=True)
            teacher = str(Path(teacher_cc.train.out) / ts.models[-1])
            cc = cc.replace(train=cc.train.replace(split=cc.train.split.replace(teacher=teacher)))
        return run_cluster(cc)[0]

    summary = deprune.on_ray(p, train)  # bare init: joins a cluster under `ray job submit`
    print(format_summary(summary))
    out = Path(cc.train.out)
    model, test = out / summary.models[-1], bq.test_set(cc.train)
    rows = [bq.score(model, test, codec, batch_size=cc.train.batch_size, evaluate_mode=cc.train.evaluate)
            for codec in dict.fromkeys((cc.train.split.codec, job.bq_codec))]
    result = {"model": str(model), "teacher": cc.train.split.teacher, "bottleneck": cc.train.split.bottleneck,
              "rows": [{"codec": r.codec, "accuracy": r.accuracy, "bytes_per_sample": r.bytes_per_sample,
                        "correct": r.correct, "total": r.total, "bytes_up": r.bytes_up} for r in rows]}
    (out / "bq.json").write_text(json.dumps(result, indent=2) + "\n")
    base = rows[0]
    for r in rows:
        print(f"inference with {r.codec:>8}: accuracy {100 * r.accuracy:.2f} %, {r.bytes_per_sample:,.1f} B/sample up"
              + ("" if r is base else f" ({100 * (1 - r.bytes_per_sample / base.bytes_per_sample):.1f} % fewer bytes, "
                                       f"{100 * (r.accuracy - base.accuracy):+.2f} points)"))
    print(f"run directory: {os.path.abspath(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
