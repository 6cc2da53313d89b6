"""Energy-aware client actor: one emulated edge device that picks its cut per message.

A thin host around :class:`raysplit.energy.client.EnergyClient`: it builds the client
(the compressed whole model, its planners, its own fading channel), walks its share of
the test set in messages through the Ray shard transport, and hands its rows to the
record buffer at least once a second (a killed run keeps what was handed over).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import ray
import torch

from raysplit.data import ArrayDataset, batches
from raysplit.energy.choice import CutPlanner
from raysplit.energy.client import EnergyClient
from raysplit.energy.costs import HardwareCosts
from raysplit.energy.energy import Radio
from raysplit.energy.profile import ModelProfile
from raysplit.energy.uplink import Uplink
from raysplit.identity import Identity
from raysplit.link.channel import BlockFading
from raysplit.models.whole import whole_model
from raysplit.runtime.actors.buffer import BufferSink
from raysplit.training.state import load_numpy_state
from raysplit.transport.ray_shard import RayShardTransport


@dataclass(frozen=True)
class EnergyClientSpec:
    """Everything one client needs.

    Args:
        client: its id.
        model, input_shape, num_classes: the network.
        state: the compressed model's weights (an object reference or a dict of arrays).
        compressed, original: the two models' profiles.
        costs, codec, bits, radio: the energy model.
        fading, block_s, seed, rician_k: its channel (seed: its own).
        policy, interval_blocks, carbon_index: how it picks and prices its cut.
        allowed: the cuts PS chooses from.
        batch: samples per message.
        test_x, test_y: its share of the test set (object references).
        shard, shard_id: the shard actor that runs the rest, and its number.
    """

    client: int
    model: str
    input_shape: tuple[int, ...]
    num_classes: int
    state: object
    compressed: ModelProfile
    original: ModelProfile
    costs: HardwareCosts
    codec: str
    bits: str
    radio: Radio
    fading: str
    block_s: float
    seed: int
    rician_k: float
    policy: str
    interval_blocks: int
    carbon_index: float
    allowed: tuple[int, ...]
    batch: int
    test_x: object
    test_y: object
    shard: object
    shard_id: int


def _get(value):
    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


class EnergyClientHost:
    """Args:
    spec: the client.
    identity: the run's identity.
    buffer: the record buffer actor.
    flush_seconds: hand rows over at least this often.
    """

    def __init__(self, spec: EnergyClientSpec, identity: Identity, buffer, flush_seconds: float = 1.0) -> None:
        torch.set_num_threads(1)
        self.spec, self.flush_seconds = spec, flush_seconds
        model = whole_model(spec.model, spec.input_shape, spec.num_classes)
        load_numpy_state(model.layers, {k: np.array(v) for k, v in _get(spec.state).items()})  # writeable copies
        planner = CutPlanner(spec.compressed, spec.costs, spec.codec, spec.bits, spec.radio.power_w, spec.block_s)
        original = CutPlanner(spec.original, spec.costs, spec.codec, spec.bits, spec.radio.power_w, spec.block_s)
        uplink = Uplink(spec.radio, BlockFading(spec.fading, spec.block_s, spec.seed, spec.rician_k))
        self.client = EnergyClient(model, planner, original, uplink, policy=spec.policy,
                                   interval_blocks=spec.interval_blocks, carbon_index=spec.carbon_index,
                                   client_id=spec.client, identity=identity, allowed=spec.allowed)
        self.data = ArrayDataset("test", np.array(_get(spec.test_x)), np.array(_get(spec.test_y)), spec.num_classes)
        self.transport = RayShardTransport(spec.shard)
        self.buffer, self.sink = buffer, BufferSink(buffer)

    def ready(self) -> dict:
        return {"client": self.spec.client, "pid": os.getpid(), "samples": len(self.data)}

    def run(self) -> dict:
        """Every message of this client's share; returns its totals."""
        rows, last = [], time.monotonic()
        messages = samples = correct = 0
        for x, y in batches(self.data, self.spec.batch, shuffle=False, seed=0):
            _, row = self.client.infer(x, y, self.transport, shard=self.spec.shard_id)
            rows.append(row)
            messages, samples, correct = messages + 1, samples + row.samples, correct + row.correct
            if time.monotonic() - last >= self.flush_seconds:
                self.sink.put(rows)
                rows, last = [], time.monotonic()
        # Waited for: once run returns, every row of this client is in the buffer (an
        # actor runs one caller's calls in order).
        ray.get(self.buffer.put.remote(rows))
        return {"client": self.spec.client, "messages": messages, "samples": samples, "correct": correct}


EnergyClientActor = ray.remote(EnergyClientHost)
