"""The local reference trainer as a user runs it (digits at 16 px: seconds)."""

import json

import pyarrow.parquet as pq
import pytest
import torch

from raysplit import local
from raysplit.results import EPOCH_COLUMNS, SUMMARY_KEYS

COMMON = ["--dataset", "digits", "--image-size", "16", "--batch-size", "32", "--max-batches", "8",
          "--test-subset", "128", "--threads", "1", "--no-progress"]


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


def test_prune_keeps_one_model_per_budget(tmp_path):
    out = tmp_path / "p"
    local.main(COMMON + ["--method", "prune", "--budgets", "128,32,4", "--epochs-per-budget", "1", "--out", str(out)])
    s, ep, _ = read(out)
    assert ep["budget"].tolist() == [128, 32, 4]
    for b in (128, 32, 4):
        m = torch.load(out / "models" / f"budget_{b}.pt", weights_only=False)
        assert m["budget"] == b and "client" in m and "server" in m
    a = torch.load(out / "models" / "budget_128.pt", weights_only=False)["client"]
    c = torch.load(out / "models" / "budget_4.pt", weights_only=False)["client"]
    assert not torch.equal(a["1.f_hat"], c["1.f_hat"])  # transfer went on training


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
    with pytest.raises(ValueError, match="budget 500 exceeds the 128 channels"):
        local.run(cfg, progress=False)
