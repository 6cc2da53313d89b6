"""Local reference trainer: split learning in one process, no Ray.

    python -m raysplit.local --method deprune --budgets 4,128 --epochs-per-budget 2,1

It runs the cluster's own loop (``raysplit.training.loop.ClientLoop``) with the
in-process transport and the scheduler's core called directly, and every activation and
gradient goes through the wire codec, so bytes are the real message sizes and the cluster
can be checked step by step against this.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Sequence

from raysplit.budget.policies import WAIT, make_policy
from raysplit.config.cli import ConfigParser
from raysplit.config.link import LinkConfig
from raysplit.config.split import SplitConfig
from raysplit.config.train import TrainConfig
from raysplit.data import num_batches
from raysplit.keys import Keyring, tenant_secret
from raysplit.observability.callbacks import Callback, ProgressBar
from raysplit.records.rows import Summary
from raysplit.records.summary import format_summary
from raysplit.records.writer import CheckpointSnapshot, ModelSnapshot, RunWriter
from raysplit.runtime.coordinator import (
    AlignClocks,
    Coordinator,
    Record,
    SaveCheckpoint,
    SaveModel,
    ShareAverage,
    SyncShards,
)
from raysplit.runtime.failure import fault_summary
from raysplit.training.loop import ClientLoop, Report
from raysplit.training.server import SplitServer
from raysplit.training.setup import prepare
from raysplit.training.ushaped import client_half, server_half
from raysplit.transport.emulated import EmulatedTransport
from raysplit.transport.inprocess import InProcessTransport


class LocalScheduler:
    """The scheduler's core for one in-process client and one server: actions are
    performed by direct calls (there is nothing to sync and nobody to wait for)."""

    def __init__(self, core: Coordinator, server: SplitServer, writer: RunWriter) -> None:
        self.core, self.server, self.writer = core, server, writer

    def next(self, client: int, report: Report | None):
        for a in self.core.report(client, report):
            if isinstance(a, SaveModel):
                self.writer.put([ModelSnapshot(a.phase, a.budget, a.epoch, a.heads, self.server.modules_state())])
            elif isinstance(a, SaveCheckpoint):
                self.writer.put([CheckpointSnapshot(a.epoch, a.clients, [self.server.state_dict()],
                                                    self.core.state_dict())])
            elif isinstance(a, Record):
                self.writer.put(list(a.items))
            elif not isinstance(a, (SyncShards, ShareAverage, AlignClocks)):  # one client: nothing to do
                raise TypeError(f"unknown action {a!r}")
        d = self.core.decide(client)
        if d is WAIT:
            raise RuntimeError(f"client {client} was told to wait, but it is the only client")
        return d


def run(cfg: TrainConfig, *, callbacks: Sequence[Callback] = ()) -> Summary:
    """Train ``cfg`` in this process and write its run directory; returns the summary."""
    t_start = time.perf_counter()
    t0 = time.time()
    prep = prepare(cfg)
    cfg, plan, identity = prep.cfg, prep.plan, prep.identity
    steps = num_batches(len(prep.train), cfg.batch_size, max_batches=cfg.max_batches)
    progress = ProgressBar(steps * plan.total_epochs, desc=cfg.method, enabled=cfg.progress)
    ck = None
    if cfg.resume:  # the latest checkpoint, and the rows up to it (read before the writer starts anew)
        from raysplit.runtime.checkpoint import load_checkpoint
        from raysplit.runtime.resume import checkpoint_cut, kept_records, latest_checkpoint

        ck_dir = latest_checkpoint(cfg.out)
        ck = load_checkpoint(ck_dir)
        policy = make_policy("sync", plan, {0: steps})
        policy.load_state_dict(ck["scheduler"]["policy"])
        kept, last_time = kept_records(cfg.out, checkpoint_cut(ck, policy.progress()))
        t0 = time.time() - last_time
    writer = RunWriter(cfg.out, config=cfg.to_dict(), clients=[0], split=cfg.split, method=cfg.method,
                       callbacks=[progress, *callbacks], resume=ck is not None)
    keyring = Keyring(tenant_secret(cfg.tenant_key_file), identity.tenant)  # messages tagged as on the cluster
    client = client_half(cfg.split, 0, tenant_key=identity.tenant_key, key=keyring.client_key(0))
    server = server_half(cfg.split, 0, plan=plan, tenant_key=identity.tenant_key, keyring=keyring)
    core = Coordinator(make_policy("sync", plan, {0: steps}), plan, {0: float(len(prep.train))},
                       checkpoint_every=cfg.checkpoint_every)
    transport = InProcessTransport(server)
    if cfg.link.enabled:  # the one client's link, in this process
        from raysplit.link.port import LocalPort

        port = LocalPort(cfg.link.build_medium({0: 0}, cfg.split.seed))
        transport = EmulatedTransport(transport, port, 0, mode=cfg.link.link_mode,
                                      compute=cfg.link.compute_model(cfg.split, cfg.link.client_cpus(1, None)[0]))
    loop = ClientLoop(
        client=client, train=prep.train, test=prep.test, plan=plan, transport=transport,
        scheduler=LocalScheduler(core, server, writer), sink=writer, identity=identity, shard=0,
        batch_size=cfg.batch_size, seed=cfg.split.seed, t0=t0,
    )
    if ck is not None:
        loop.load_state_dict(ck["clients"][0])
        server.load_state_dict(ck["shards"][0])
        core.load_state_dict(ck["scheduler"])
        writer.put(kept)
    startup = time.perf_counter() - t_start
    t_train = time.perf_counter()
    result = loop.run()
    train_seconds = time.perf_counter() - t_train
    summary = Summary(
        run=identity.run, tenant=identity.tenant, method=cfg.method, dataset=cfg.dataset, model=cfg.split.model,
        split_layer=cfg.split.split_layer, budgets=list(plan.schedule.budgets),
        epochs_per_budget=list(plan.schedule.epochs), codec=cfg.split.codec,
        final_test_accuracy=writer.epoch_rows[-1].test_accuracy if writer.epoch_rows else math.nan,
        bytes_up=writer.totals["bytes_up"], bytes_down=writer.totals["bytes_down"],
        samples=writer.totals["samples"], steps=writer.totals["steps"], wall_seconds=startup + train_seconds,
        startup_seconds=startup, train_seconds=train_seconds, train_samples=len(prep.train),
        test_samples=len(prep.test), epochs=len(writer.epoch_rows),
        transitions=[t.__dict__ for t in core.transitions], models=writer.models, checkpoints=writer.checkpoints,
        final_filter=result.final_filter, **cfg.link.summary_fields(writer, 1),
        skipped_steps=fault_summary(writer, [])["skipped_steps"], duplicate_records=writer.duplicates,
        resumed_from=None if ck is None else str(ck_dir.relative_to(cfg.out)),
    )
    writer.close(summary)
    return summary


def parser() -> ConfigParser:
    return ConfigParser(
        "python -m raysplit.local",
        __doc__.split("\n\n")[0],
        [("training", TrainConfig), ("network", SplitConfig), ("emulated network", LinkConfig)],
    )


def config_from_argv(p: ConfigParser, argv: list[str] | None) -> TrainConfig:
    values = p.parse(argv)
    split = p.build(SplitConfig, values[SplitConfig])
    link = p.build(LinkConfig, values[LinkConfig])
    cfg = p.build(TrainConfig, values[TrainConfig], split=split, link=link)
    if cfg.resume is not None:  # the run's own configuration, from its directory
        from raysplit.runtime.resume import given_options, resumed_config

        try:
            cfg = resumed_config(cfg.resume, given_options(p, argv), TrainConfig)
        except (ValueError, FileNotFoundError) as e:
            p.error(str(e))
    return cfg


def main(argv: list[str] | None = None) -> int:
    p = parser()
    cfg = config_from_argv(p, argv)
    try:
        summary = run(cfg)
    except (ValueError, FileNotFoundError) as e:  # bad values found once the data is known
        p.parser.exit(2, f"{p.parser.prog}: error: {e}\n")
    print(format_summary(summary))
    print(f"run directory: {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
