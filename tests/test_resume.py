"""--resume without Ray: the local trainer stopped mid-epoch continues from its last
checkpoint and ends exactly where an uninterrupted run does; configuration checks."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from raysplit import local
from raysplit.config import ClusterConfig, SplitConfig, TrainConfig
from raysplit.observability.callbacks import Callback
from raysplit.runtime.resume import check_given, from_dict, latest_checkpoint, load_run_config

ARGS = ["--dataset", "digits", "--image-size", "16", "--batch-size", "32", "--max-batches", "6", "--test-subset",
        "64", "--threads", "1", "--no-progress", "--budgets", "4,128", "--epochs-per-budget", "2,1",
        "--checkpoint-every", "1", "--seed", "3"]


class Crash(Callback):
    """Stops the process's run when epoch ``epoch`` has ``after`` steps (as a kill would)."""

    def __init__(self, epoch: int, after: int) -> None:
        self.epoch, self.after, self.seen = epoch, after, 0

    def on_steps(self, rows):
        self.seen += sum(r.epoch == self.epoch for r in rows)
        if self.seen >= self.after:
            raise KeyboardInterrupt("stopped")


def test_a_stopped_local_run_resumes_and_matches_an_uninterrupted_one(tmp_path):
    assert local.main([*ARGS, "--out", str(tmp_path / "ref")]) == 0
    cfg = local.config_from_argv(local.parser(), [*ARGS, "--out", str(tmp_path / "run")])
    with pytest.raises(KeyboardInterrupt):
        local.run(cfg, callbacks=[Crash(epoch=2, after=3)])
    assert latest_checkpoint(tmp_path / "run").name == "epoch_1"
    assert local.main(["--resume", str(tmp_path / "run"), "--no-progress"]) == 0
    a = pq.read_table(tmp_path / "ref" / "steps.parquet").to_pandas()
    b = pq.read_table(tmp_path / "run" / "steps.parquet").to_pandas().sort_values("step")
    assert b["step"].tolist() == list(range(1, 19))  # no gap, no repeat
    assert (a["bytes_up"].tolist(), a["bytes_down"].tolist()) == (b["bytes_up"].tolist(), b["bytes_down"].tolist())
    np.testing.assert_allclose(b["loss"].to_numpy(), a["loss"].to_numpy(), rtol=1e-5, atol=1e-6)
    sa, sb = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("ref", "run"))
    assert sb["resumed_from"] == "checkpoints/epoch_1"
    for k in ("samples", "steps", "bytes_up", "bytes_down", "final_test_accuracy", "epochs"):
        assert sa[k] == sb[k], k
    np.testing.assert_allclose(sa["final_filter"], sb["final_filter"], rtol=1e-5)
    assert sb["checkpoints"] == ["checkpoints/epoch_0", "checkpoints/epoch_1", "checkpoints/epoch_2"]
    ea, eb = (pq.read_table(tmp_path / d / "epochs.parquet").to_pandas() for d in ("ref", "run"))
    assert ea["samples"].tolist() == eb["samples"].tolist() and ea["bytes_up"].tolist() == eb["bytes_up"].tolist()


def test_resume_keeps_the_runs_configuration_and_names_what_differs(tmp_path, capsys):
    assert local.main([*ARGS, "--out", str(tmp_path / "r"), "--epochs-per-budget", "1,1"]) == 0
    saved = load_run_config(tmp_path / "r", TrainConfig)
    assert saved.split.seed == 3 and saved.checkpoint_every == 1
    with pytest.raises(SystemExit):
        local.main(["--resume", str(tmp_path / "r"), "--lr", "0.5"])
    assert "these options differ: lr (0.5; the run has 0.01)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="made by python -m raysplit.local; resume it with python -m raysplit.local"):
        load_run_config(tmp_path / "r", ClusterConfig)
    check_given(saved, {"progress": False, "lr": 0.01})  # the same value, or a runtime option: fine
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        latest_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="options this raysplit does not know: bogus"):
        from_dict(SplitConfig, {"bogus": 1})


def test_a_run_with_device_classes_reads_back_from_its_config_json():
    from raysplit.config.link import LinkConfig, parse_devices

    link = LinkConfig(devices=parse_devices("phone:0.5:0.4:wifi;iot:0.5:0.2:nbiot"))
    cc = ClusterConfig(train=TrainConfig(dataset="digits", out="/tmp/x", progress=False, link=link), clients=2)
    assert from_dict(ClusterConfig, json.loads(json.dumps(cc.to_dict()))) == cc
