"""Local reference trainer: split learning in one process, no Ray.

    python -m raysplit.local --method deprune --budgets 4,128 --epochs-per-budget 2,1

Client and server are the same ``SplitClient``/``SplitServer`` the cluster's actors
hold, and every activation and gradient goes through the wire codec, so bytes are the
real message sizes and the cluster can be checked step by step against this.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from raysplit.cli import add_train_args, parse_with_config, train_config_from_args
from raysplit.config import TrainConfig
from raysplit.data import batches
from raysplit.results import format_summary, write_run
from raysplit.training.client import SplitClient
from raysplit.training.run import evaluate, load_data, reset_kind, resolve, run_identity
from raysplit.training.server import SplitServer


def save_budget_model(out: Path, budget: int, client: SplitClient, server: SplitServer, cfg: TrainConfig) -> Path:
    """Prune keeps one trained model per budget: models/budget_<B>.pt."""
    path = out / "models" / f"budget_{budget}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "budget": budget,
            "split_config": dataclasses.asdict(cfg.split),
            "client": client.modules.state_dict(),
            "server": server.modules.state_dict(),
        },
        path,
    )
    return path


def run(cfg: TrainConfig, *, progress: bool = True) -> dict:
    t_start = time.perf_counter()
    train, test = load_data(cfg)
    cfg = resolve(cfg, train)
    out = Path(cfg.out)
    client = SplitClient(cfg.split, client_id=0)
    server = SplitServer(cfg.split, shard_id=0)
    sched = cfg.schedule()
    steps, epochs = [], []
    bytes_up = bytes_down = samples = 0
    step_no = 0
    bar = tqdm(total=sched.total_epochs, desc=f"{cfg.method}", unit="epoch", disable=not progress)
    for epoch in range(sched.total_epochs):
        phase = sched.phase_at(epoch)
        if sched.is_transition(epoch):
            prev = sched.budgets[phase.index - 1]
            if cfg.method == "prune":
                save_budget_model(out, prev, client, server, cfg)
            if cfg.reset_filter:
                client.reset_filter(reset_kind(cfg.method), prev, seed=cfg.split.seed + epoch)
        lr = sched.lr_at(epoch)
        client.set_lr(lr)
        server.set_lr(lr)
        client.set_budget(phase.budget)
        ep_up = ep_down = ep_n = 0
        loss_sum = 0.0
        for x, y in batches(
            train, cfg.batch_size, shuffle=True, seed=cfg.split.seed, epoch=epoch, max_batches=cfg.max_batches
        ):
            t0 = time.perf_counter()
            up = client.forward(x, y)
            (down,), (res,) = server.train_step([up])
            info = client.backward(down)
            step_no += 1
            ep_up += len(up)
            ep_down += len(down)
            ep_n += len(y)
            loss_sum += res.loss * len(y)
            steps.append(
                {
                    "client": 0,
                    "epoch": epoch,
                    "step": step_no,
                    "budget": phase.budget,
                    "bytes_up": len(up),
                    "bytes_down": len(down),
                    "latency": time.perf_counter() - t0,
                    "loss": res.loss,
                    "prune_loss": info["prune_loss"],
                    "t": time.perf_counter() - t_start,
                }
            )
        correct, total, _ = evaluate(client, server.predict, test, cfg.batch_size)
        acc = correct / max(total, 1)
        epochs.append(
            {
                "epoch": epoch,
                "budget": phase.budget,
                "lr": lr,
                "train_loss": loss_sum / max(ep_n, 1),
                "test_accuracy": acc,
                "bytes_up": ep_up,
                "bytes_down": ep_down,
                "samples": ep_n,
            }
        )
        bytes_up += ep_up
        bytes_down += ep_down
        samples += ep_n
        bar.set_postfix(B=phase.budget, loss=f"{loss_sum / max(ep_n, 1):.3f}", acc=f"{acc:.3f}")
        bar.update(1)
    bar.close()
    if cfg.method == "prune":
        save_budget_model(out, sched.budgets[-1], client, server, cfg)
    summary = {
        **run_identity(cfg),
        "final_test_accuracy": epochs[-1]["test_accuracy"],
        "bytes_up": bytes_up,
        "bytes_down": bytes_down,
        "samples": samples,
        "wall_seconds": time.perf_counter() - t_start,
        "train_samples": len(train),
        "test_samples": len(test),
        "final_filter": None if client.filter_values() is None else [round(float(v), 4) for v in client.filter_values()],
    }
    write_run(out, config=cfg.to_dict(), summary=summary, epochs=epochs, steps=steps)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m raysplit.local", description=__doc__.split("\n\n")[0])
    add_train_args(p, default_out="runs/local")
    a = parse_with_config(p, argv)
    try:
        cfg = train_config_from_args(a)
    except ValueError as e:
        p.error(str(e))
    try:
        summary = run(cfg, progress=not a.no_progress)
    except (ValueError, FileNotFoundError) as e:  # bad values found once the data is known
        p.exit(2, f"{p.prog}: error: {e}\n")
    print(format_summary(summary))
    print(f"run directory: {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
