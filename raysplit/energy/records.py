"""What the energy-aware split records: one row per inference message, and the run's summary."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class InferenceRow:
    """One inference message of one client (a batch of ``samples`` sharing one channel draw).

    Energies are joules for the whole batch; the baselines' are what pool-1, softmax and
    PSNC (the uncompressed model's best cut) would have cost on the same channel.

    Args:
        run, tenant: the run's identity.
        client, shard: who sent it and which server replica ran the rest.
        batch: the message's index in the client's stream (its start is batch * interval).
        samples: inferences in it.
        sim_time: the channel clock at its start, s.
        gain: |h|² of its first fading block.
        cut: the cut sent (0 = the raw input, L = the class scores).
        layer: the name of the layer whose output was sent.
        sent_channels: channels (or neurons) sent of the cut's C.
        bits: the bits the energy model counted.
        bytes_up: len of the message actually sent.
        tx_seconds: τ of eq. 4.
        compute_j, memory_j, processing_j, transmit_j, energy_j: E_c, E_m, E_p, E_tr, E.
        co2_kg: CO2 of E.
        pool1_processing_j, pool1_transmit_j, softmax_processing_j, softmax_transmit_j,
        psnc_processing_j, psnc_transmit_j: the baselines' E_p and E_tr.
        psnc_cut: the cut PSNC would send.
        input_transmit_j: E_tr of sending the raw input (E_p = 0: plain remote inference).
        correct: samples the server classified right.
        latency: wall seconds from encoding to holding the predictions.
    """

    run: str
    tenant: str
    client: int
    shard: int
    batch: int
    samples: int
    sim_time: float
    gain: float
    cut: int
    layer: str
    sent_channels: int
    bits: int
    bytes_up: int
    tx_seconds: float
    compute_j: float
    memory_j: float
    processing_j: float
    transmit_j: float
    energy_j: float
    co2_kg: float
    pool1_processing_j: float
    pool1_transmit_j: float
    softmax_processing_j: float
    softmax_transmit_j: float
    psnc_processing_j: float
    psnc_transmit_j: float
    psnc_cut: int
    input_transmit_j: float
    correct: int
    latency: float


@dataclass(frozen=True)
class EnergySummary:
    """The run at a glance (summary.json).

    Args:
        run, tenant, model, dataset, policy, codec: what ran.
        clients, shards: the cluster's shape.
        bandwidth: W of the cluster run, Hz.
        original_accuracy, compressed_accuracy: test accuracy of the two models (local evaluation).
        cluster_accuracy: of the cluster's split inferences (the compressed model, cut per message).
        compression_ratio: C_r.
        params_original, params_compressed: non-zero parameters.
        samples, messages: inferences and messages of the cluster run.
        bytes_up: message bytes sent by all clients.
        energy_j, processing_j, transmit_j, co2_kg: per inference, means over the cluster run.
        cuts: how many messages were sent at each cut.
        table: the cluster's Table III at ``bandwidth`` (per inference), rows by method.
        simulated: the Table III simulation, rows by bandwidth and method.
        failed_clients: {client: error} of clients that failed (the others' work is kept).
        wall_seconds, train_seconds, infer_seconds: times.
    """

    run: str
    tenant: str
    model: str
    dataset: str
    policy: str
    codec: str
    clients: int
    shards: int
    bandwidth: float
    original_accuracy: float
    compressed_accuracy: float
    cluster_accuracy: float
    compression_ratio: float
    params_original: int
    params_compressed: int
    samples: int
    messages: int
    bytes_up: int
    energy_j: float
    processing_j: float
    transmit_j: float
    co2_kg: float
    cuts: dict = field(default_factory=dict)
    table: list = field(default_factory=list)
    simulated: list = field(default_factory=list)
    failed_clients: dict = field(default_factory=dict)
    wall_seconds: float = 0.0
    train_seconds: float = 0.0
    infer_seconds: float = 0.0
