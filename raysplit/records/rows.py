"""The one schema of everything a run records: typed rows and the summary.

Step rows are written by whichever loop ran the step (local trainer or client actor),
evaluation rows after each epoch's evaluation, epoch rows by the run writer once every
live client has evaluated that epoch. The Parquet schema is derived from these classes
(``arrow_schema``), so a column cannot be added in one place and forgotten in another.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field

import pyarrow as pa

_ARROW = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}


@dataclass(frozen=True)
class StepRow:
    """One training step of one client.

    Args:
        run, tenant: the run's identity.
        client, shard: who trained it and against which server replica.
        epoch, batch: the epoch and the batch's index in it.
        step: the client's step counter (carried in both of the step's messages).
        phase, budget, lr: plan phase, channels sent, learning rate.
        samples: batch size of this step.
        bytes_up, bytes_down: len of the activation and the gradient message.
        loss: the task loss (mean over the batch), computed by the server.
        prune_loss: the client's unweighted pruneLoss (0 when the stage has none).
        correct: samples the tail classified right (training mode).
        time: seconds since the run started, at the step's end.
        latency: wall seconds of the whole step.
        forward_s: client head + compression + encode.
        exchange_s: handing the message over until holding the reply (includes the server).
        queue_s: of which waiting at the server for its step to begin.
        server_s: of which the server's (merged) step: decode, forward, backward, encode.
        backward_s: client decode + backward + optimizer step.
        merged: micro-batches in the server step.
        compute_s ... wire_bytes_down: the emulated network's view of the step
            (``raysplit.link.timing.LinkTiming``): client compute, uplink, server and
            downlink time and the client's clock at the step's end (simulated in virtual
            mode, wall in realtime), its link capacity when each transfer began (Mbit/s),
            bytes on the wire with headers and retransmissions. Without a link: compute_s =
            forward_s + backward_s, uplink_s = sim_server_s = downlink_s = 0, sim_time and the
            capacities NaN, wire bytes = bytes_up / bytes_down.
    """

    run: str
    tenant: str
    client: int
    shard: int
    epoch: int
    batch: int
    step: int
    phase: int
    budget: int
    lr: float
    samples: int
    bytes_up: int
    bytes_down: int
    loss: float
    prune_loss: float
    correct: int
    time: float
    latency: float
    forward_s: float
    exchange_s: float
    queue_s: float
    server_s: float
    backward_s: float
    merged: int
    compute_s: float = math.nan
    uplink_s: float = 0.0
    sim_server_s: float = 0.0
    downlink_s: float = 0.0
    sim_time: float = math.nan
    link_up_mbps: float = math.nan
    link_down_mbps: float = math.nan
    wire_bytes_up: int = -1
    wire_bytes_down: int = -1

    def __post_init__(self) -> None:
        # Built without link columns: their neutral values (see Args).
        if math.isnan(self.compute_s):
            object.__setattr__(self, "compute_s", self.forward_s + self.backward_s)
        if self.wire_bytes_up < 0:
            object.__setattr__(self, "wire_bytes_up", self.bytes_up)
        if self.wire_bytes_down < 0:
            object.__setattr__(self, "wire_bytes_down", self.bytes_down)


@dataclass(frozen=True)
class EvalRow:
    """One client's evaluation after an epoch.

    Args:
        run, tenant, client: identity.
        epoch, phase, budget, lr: what it was trained at.
        correct, total: test predictions right / made (its share of the test set).
        bytes_up: inference messages sent.
        seconds: wall time of the evaluation.
        time: seconds since the run started, at its end.
    """

    run: str
    tenant: str
    client: int
    epoch: int
    phase: int
    budget: int
    lr: float
    correct: int
    total: int
    bytes_up: int
    seconds: float
    time: float


@dataclass(frozen=True)
class EpochRow:
    """One epoch of the whole run.

    Args:
        epoch, phase, budget, lr: the schedule's.
        train_loss: sample-weighted mean task loss over every client's steps.
        test_accuracy: correct / total over every client's evaluation.
        bytes_up, bytes_down: training traffic (activations up, gradients down).
        eval_bytes_up: inference traffic of the evaluation.
        samples, steps: training samples and steps.
        clients: clients that trained in it.
        time: seconds since the run started, when its last evaluation ended.
        sim_time: the latest emulated clock of the epoch's steps (NaN without a link).
    """

    epoch: int
    phase: int
    budget: int
    lr: float
    train_loss: float
    test_accuracy: float
    bytes_up: int
    bytes_down: int
    eval_bytes_up: int
    samples: int
    steps: int
    clients: int
    time: float
    sim_time: float = math.nan


@dataclass(frozen=True)
class Summary:
    """summary.json: what was run and what it gave.

    Args:
        run, tenant: identity.
        method, dataset, model, split_layer, budgets, epochs_per_budget, codec: what was run.
        final_test_accuracy: the last epoch's test accuracy.
        bytes_up, bytes_down: all training traffic.
        samples, steps: all training samples and steps.
        wall_seconds: start-up (data, actors) + training.
        startup_seconds, train_seconds: the two parts.
        train_samples, test_samples: data set sizes used.
        epochs: epochs completed.
        transitions: budget transitions as they happened.
        models: saved models (relative paths).
        checkpoints: saved checkpoints (relative paths).
        final_filter: the filter f of client 0 at the end (None without the module).
        clients ... mean_merged_microbatches: the cluster's shape and behaviour (None for a local run).
        placement: where the actors ran (``raysplit.runtime.nodes.where``; None for a local run).
        sim_seconds: the emulated clock at the end of training: the latest client's (None without a
            link).
        time_to_accuracy: when the test accuracy first reached target_accuracy, on the emulated clock
            with a link, else on the wall clock since the start (None: not reached, or no target).
        target_accuracy: the --target-accuracy asked for.
        link_mode, links: the emulated network (None without one): its mode and one line per link.
        restarts: the parts that came back after a failure (component, id, seconds, what from).
        skipped_steps: steps skipped for NaN/Inf (--on-nonfinite skip).
        duplicate_records: step and evaluation records received again and dropped (replays).
        rejected_messages: messages the shards refused, by reason.
        resumed_from: the checkpoint a --resume run continued from.
        virtual: what virtual clients cost (``raysplit.runtime.virtual.summarise``; None without them).
    """

    run: str
    tenant: str
    method: str
    dataset: str
    model: str
    split_layer: int
    budgets: list[int]
    epochs_per_budget: list[int]
    codec: str
    final_test_accuracy: float
    bytes_up: int
    bytes_down: int
    samples: int
    steps: int
    wall_seconds: float
    startup_seconds: float
    train_seconds: float
    train_samples: int
    test_samples: int
    epochs: int
    transitions: list[dict] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    final_filter: list[float] | None = None
    clients: int | None = None
    clients_per_actor: int | None = None
    client_actors: int | None = None
    shards: int | None = None
    mode: str | None = None
    policy: str | None = None
    shard_sync: str | None = None
    client_cpu: float | None = None
    cap_mechanism: list[str] | None = None
    client_num_cpus: float | None = None
    malloc: str | None = None
    shard_devices: list[str] | None = None
    failed_clients: dict[str, str] = field(default_factory=dict)
    mean_merged_microbatches: float | None = None
    placement: dict | None = None
    sim_seconds: float | None = None
    time_to_accuracy: float | None = None
    target_accuracy: float | None = None
    link_mode: str | None = None
    links: list[str] | None = None
    restarts: list[dict] = field(default_factory=list)
    skipped_steps: int = 0
    duplicate_records: int = 0
    rejected_messages: dict[str, int] = field(default_factory=dict)
    resumed_from: str | None = None
    virtual: dict | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def arrow_schema(row_type: type) -> pa.Schema:
    """The Parquet schema of a row class: int -> int64, float -> float64, str -> string."""
    hints = typing.get_type_hints(row_type)
    return pa.schema([pa.field(f.name, _ARROW[hints[f.name]]) for f in dataclasses.fields(row_type)])


def to_table(rows: list, row_type: type) -> pa.Table:
    schema = arrow_schema(row_type)
    cols = {name: [getattr(r, name) for r in rows] for name in schema.names}
    return pa.table(cols, schema=schema)
