"""The local reference trainer as a user runs it (digits at 16 px: seconds)."""

import dataclasses
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from raysplit import local
from raysplit.data import load_dataset
from raysplit.inference import load_model
from raysplit.records.rows import EpochRow, StepRow, Summary
from raysplit.runtime.checkpoint import load_checkpoint

SUMMARY_KEYS = [f.name for f in dataclasses.fields(Summary)]
EPOCH_COLUMNS = [f.name for f in dataclasses.fields(EpochRow)]

COMMON = ["--dataset", "digits", "--image-size", "16", "--batch-size", "32", "--max-batches", "8",
          "--test-subset", "128", "--threads", "1", "--no-progress"]


def test_step_rows_follow_the_schema(tmp_path):
    out = tmp_path / "s"
    local.main(COMMON + ["--method", "fixed", "--budgets", "4", "--epochs-per-budget", "1", "--out", str(out)])
    st = pq.read_table(out / "steps.parquet").to_pandas()
    assert list(st.columns) == [f.name for f in dataclasses.fields(StepRow)]
    assert (st["latency"] >= st["forward_s"] + st["exchange_s"] + st["backward_s"] - 1e-6).all()
    assert (st["exchange_s"] >= st["server_s"]).all() and (st["merged"] == 1).all()
    assert st["tenant"].unique().tolist() == ["default"] and st["run"].nunique() == 1
    assert np.all(np.diff(st["time"].to_numpy()) >= 0)


def read(out):
    s = json.loads((out / "summary.json").read_text())
    return s, pq.read_table(out / "epochs.parquet").to_pandas(), pq.read_table(out / "steps.parquet").to_pandas()


@pytest.mark.parametrize(
    "args,budgets",
    [
        (["--method", "none", "--epochs-per-budget", "2"], [128]),
        (["--method", "fixed", "--budgets", "4", "--epochs-per-budget", "2"], [4]),
        (["--method", "deprune", "--budgets", "4,128", "--epochs-per-budget", "1,1"], [4, 128]),
    ],
)
def test_methods_write_the_run_directory(tmp_path, args, budgets):
    out = tmp_path / "run"
    assert local.main(COMMON + args + ["--out", str(out)]) == 0
    s, ep, st = read(out)
    assert set(SUMMARY_KEYS) <= set(s)
    assert s["budgets"] == budgets and 0 <= s["final_test_accuracy"] <= 1
    assert set(EPOCH_COLUMNS) <= set(ep.columns) and len(ep) == 2
    assert s["bytes_up"] == ep["bytes_up"].sum() == st["bytes_up"].sum()
    assert s["bytes_down"] == ep["bytes_down"].sum()
    assert s["samples"] == 2 * 8 * 32
    assert (out / "accuracy.png").stat().st_size > 1000 and (out / "bytes.png").exists()


def test_deprune_sends_far_fewer_bytes_at_small_budget(tmp_path):
    local.main(COMMON + ["--method", "none", "--epochs-per-budget", "1", "--out", str(tmp_path / "n")])
    local.main(COMMON + ["--method", "fixed", "--budgets", "4", "--epochs-per-budget", "1", "--out", str(tmp_path / "f")])
    n, f = read(tmp_path / "n")[0], read(tmp_path / "f")[0]
    assert n["bytes_up"] / f["bytes_up"] > 25  # 128 of 128 channels vs 4 of 128


def test_deprune_select_lr_and_transition(tmp_path):
    out = tmp_path / "d"
    local.main(COMMON + ["--method", "deprune", "--budgets", "4,128", "--epochs-per-budget", "1,2",
                         "--lr", "0.01", "--gamma", "5", "--lk", "1", "--out", str(out)])
    _, ep, _ = read(out)
    assert ep["budget"].tolist() == [4, 128, 128]
    assert ep["lr"].tolist() == pytest.approx([0.01, 0.05, 0.01])


def test_prune_keeps_one_loadable_model_per_budget(tmp_path):
    out = tmp_path / "p"
    local.main(COMMON + ["--method", "prune", "--budgets", "128,32,4", "--epochs-per-budget", "1", "--out", str(out)])
    s, ep, _ = read(out)
    assert ep["budget"].tolist() == [128, 32, 4]
    assert s["models"] == [f"models/budget_{b}.pt" for b in (128, 32, 4)]
    test = load_dataset("digits", "test", limit=128, image_size=16)
    for b, acc in zip((128, 32, 4), ep["test_accuracy"]):
        m = load_model(out / "models" / f"budget_{b}.pt")
        assert m.budget == b and m.method == "prune" and m.clients == (0,)
        # the load path rebuilds exactly the model the run evaluated at the end of that phase
        assert m.accuracy(test, batch_size=32) == pytest.approx(acc)
    a = torch.load(out / "models" / "budget_128.pt", weights_only=True)["heads"][0]
    c = torch.load(out / "models" / "budget_4.pt", weights_only=True)["heads"][0]
    assert not torch.equal(a["1.f_hat"], c["1.f_hat"])  # transfer went on training


def test_checkpoints_hold_every_part_of_the_state(tmp_path):
    out = tmp_path / "c"
    local.main(COMMON + ["--method", "deprune", "--budgets", "4,128", "--epochs-per-budget", "1",
                         "--checkpoint-every", "1", "--out", str(out)])
    s, _, st = read(out)
    assert s["checkpoints"] == ["checkpoints/epoch_0", "checkpoints/epoch_1"]
    ck = load_checkpoint(out / "checkpoints" / "epoch_0")
    client = ck["clients"][0]
    assert client["epoch"] == 0 and client["batch"] == 8 and client["client"]["step"] == 8
    assert client["client"]["optimizer"]["state"]  # momentum buffers
    assert ck["shards"][0]["steps"] == 8
    # taken once epoch 0 was evaluated: the scheduler stands at the start of epoch 1
    assert ck["scheduler"]["policy"]["epoch"] == 1 and ck["scheduler"]["policy"]["stage"] == "train"


def test_digits_default_image_size_works_with_the_default_model(tmp_path, capsys):
    out = tmp_path / "d8"
    args = [a for a in COMMON if a not in ("--image-size", "16")]
    assert local.main(args + ["--method", "fixed", "--budgets", "4", "--epochs-per-budget", "1",
                              "--max-batches", "2", "--out", str(out)]) == 0
    assert "using 16 px" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["image_size"] == 16
    with pytest.raises(SystemExit):
        local.main(args + ["--image-size", "8", "--out", str(tmp_path / "x")])
    assert "image_size 8 is too small for vgg_small: it needs at least 16 px (--image-size 16" in capsys.readouterr().err


def test_yaml_config_and_bad_values(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("method: fixed\nbudgets: 8\nepochs-per-budget: 1\n")
    out = tmp_path / "y"
    assert local.main(COMMON + ["--config", str(cfg), "--out", str(out)]) == 0
    assert read(out)[0]["budgets"] == [8]
    with pytest.raises(SystemExit):
        local.main(COMMON + ["--method", "deprune", "--budgets", "128,4", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit):
        local.main(["--codec", "float64"])
    err = capsys.readouterr().err
    assert "float64" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("bogus_option: 1\n")
    with pytest.raises(SystemExit):
        local.main(["--config", str(bad)])
    assert "unknown option 'bogus_option'" in capsys.readouterr().err


def test_budget_larger_than_channels_is_a_clear_error(tmp_path):
    from raysplit.config import SplitConfig, TrainConfig

    cfg = TrainConfig(method="fixed", dataset="digits", image_size=16, budgets=(500,), epochs_per_budget=(1,),
                      split=SplitConfig(torch_threads=1), out=str(tmp_path / "z"))
    with pytest.raises(ValueError, match="budget 500 out of range: the split has 128 channels"):
        local.run(cfg.replace(progress=False))
