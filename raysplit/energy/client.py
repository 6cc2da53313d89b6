"""An edge client that picks its cut per inference message (Krouka et al., §III-B), without Ray.

For each message it looks at the channel its transmission will see (perfect estimation,
the paper's Remark 1), prices every cut with the energy model, sends the cheapest under
its policy, and records what the baselines would have cost on that same channel. It
holds the whole (compressed) model; the server holds a copy and starts from the cut
named in the message's header. Units that pruning made constant or unused at the cut
are not sent (the server fills them in itself).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from raysplit import codec
from raysplit.energy.choice import POLICIES, CutPlanner, policy_cut
from raysplit.energy.energy import co2_kg
from raysplit.energy.records import InferenceRow
from raysplit.energy.uplink import Uplink
from raysplit.identity import Identity
from raysplit.models.whole import WholeModel
from raysplit.transport.base import Transport


class EnergyClient:
    """Args:
    model: the whole compressed model, its weights loaded.
    planner: the compressed model's energies per cut.
    original: the uncompressed model's planner (PSNC's energies, recorded for comparison).
    uplink: this client's radio and channel.
    policy: ``raysplit.energy.choice.POLICIES``.
    interval_blocks: fading blocks between consecutive messages.
    allowed: the cuts PS (and PSNC) choose from (default: the layers 1..L).
    carbon_index: kg CO2e per kWh.
    client_id: carried in every message.
    identity: run and tenant (records; the tenant key goes on the wire).
    """

    def __init__(self, model: WholeModel, planner: CutPlanner, original: CutPlanner, uplink: Uplink, *,
                 policy: str, interval_blocks: int, carbon_index: float, client_id: int,
                 identity: Identity, allowed: Sequence[int] | None = None) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
        if policy == "pool-1":
            planner.profile.cut_named("pool1")  # a model without a pooling layer: a clear error
        self.model, self.planner, self.original, self.uplink = model, planner, original, uplink
        self.policy, self.interval_blocks, self.carbon_index = policy, interval_blocks, carbon_index
        self.client_id, self.identity = int(client_id), identity
        self.allowed = None if allowed is None else tuple(allowed)
        self.pool1 = planner.profile.cut_named("pool1") if "pool1" in planner.profile.names() else None
        self.model.layers.eval()
        self.batch = 0

    @torch.no_grad()
    def encode(self, x: np.ndarray, cut: int, step: int) -> bytes:
        """The message of ``x`` cut after layer ``cut``: the units the profile sends."""
        rep = self.model.run(torch.from_numpy(np.require(x, np.float32, ["C"])), 0, cut).numpy()
        sent = self.planner.profile.sent_at(cut)
        whole = len(sent) == rep.shape[1]
        values = rep if whole else np.ascontiguousarray(rep[:, list(sent)])
        return codec.encode(values, None if whole else np.asarray(sent, dtype=np.int64), rep.shape,
                            self.planner.codec, kind=codec.KIND_ACTIVATION, step=step, client_id=self.client_id,
                            tenant=self.identity.tenant_key, cut=cut)

    def infer(self, x: np.ndarray, y: np.ndarray, transport: Transport,
              shard: int = 0) -> tuple[np.ndarray, InferenceRow]:
        """One message: choose the cut for the channel now, send, get the classes back."""
        n, b = len(x), self.batch
        start = b * self.interval_blocks
        most = max(self.planner.bits(n).max(), self.original.bits(n).max())
        rates = self.uplink.rates_for(most, start)
        en = self.planner.energies(n, rates)
        cut = policy_cut(self.policy, self.planner.profile, en, self.allowed)
        orig = self.original.energies(n, rates)
        psnc = policy_cut("ps", self.original.profile, orig, self.allowed)
        nan = float("nan")
        pool1 = (nan, nan) if self.pool1 is None else (en.processing[self.pool1], en.transmit[self.pool1])
        t = time.perf_counter()
        buf = self.encode(x, cut, step=b)
        inf = transport.infer(buf)
        latency = time.perf_counter() - t
        self.batch += 1
        p = self.planner.profile
        row = InferenceRow(
            run=self.identity.run, tenant=self.identity.tenant, client=self.client_id, shard=shard, batch=b,
            samples=n, sim_time=start * self.uplink.block_s, gain=float(self.uplink.gains(start, 1)[0]), cut=cut,
            layer=p.names()[cut], sent_channels=len(p.sent_at(cut)), bits=int(en.bits[cut]), bytes_up=inf.bytes_up,
            tx_seconds=float(en.seconds[cut]), compute_j=float(en.compute[cut]), memory_j=float(en.memory[cut]),
            processing_j=float(en.processing[cut]), transmit_j=float(en.transmit[cut]),
            energy_j=float(en.total[cut]), co2_kg=float(co2_kg(en.total[cut], self.carbon_index)),
            pool1_processing_j=float(pool1[0]), pool1_transmit_j=float(pool1[1]),
            softmax_processing_j=float(en.processing[-1]), softmax_transmit_j=float(en.transmit[-1]),
            psnc_processing_j=float(orig.processing[psnc]), psnc_transmit_j=float(orig.transmit[psnc]),
            psnc_cut=psnc, input_transmit_j=float(en.transmit[0]),
            correct=int((inf.predictions == np.asarray(y)).sum()), latency=latency,
        )
        return inf.predictions, row
