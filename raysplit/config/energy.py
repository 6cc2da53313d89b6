"""The energy-aware split (Krouka et al.): the client's energy model and the job's run."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from raysplit.codec import CodecConfig
from raysplit.config.checks import check_at_least, check_counts_or_none
from raysplit.config.cli import option
from raysplit.data import DATASETS
from raysplit.energy.choice import POLICIES, layer_cuts
from raysplit.energy.costs import ARITHMETICS, DRAM_PJ_RANGE, MEMORIES, HardwareCosts
from raysplit.energy.energy import EU_CARBON_INDEX, Radio
from raysplit.energy.simulate import Draws
from raysplit.energy.wire import BIT_COUNTS, check_codec
from raysplit.link.channel import FADING
from raysplit.models.registry import MODELS


def _codec_spec(text: str) -> str:
    check_codec(CodecConfig.parse(text))  # a size known before sending: no lz4/zstd
    return text


@dataclass(frozen=True)
class EnergyConfig:
    """The client's energy model: hardware (Tables I-II), radio and channel (eq. 3-5), carbon.

    Args:
        arithmetic: number format the client computes in (Table I row; also a stored weight's width).
        memory: where weights are fetched from (Table II row): 8kb, 32kb, 1mb or dram.
        dram_pj: pJ per 64-bit DRAM access (Table II: 1300-2600).
        power: P, the client's transmit power in W (the paper: 1 mW).
        noise_psd: N0, the noise power spectral density in W/Hz (the paper: 1e-9).
        bandwidth: W of the cluster run in Hz (the paper's simulations: 5 MHz).
        bandwidths: the bandwidths of the Table III simulation, Hz.
        path_loss_db: mean path loss between client and server, dB (the paper gives none: 0).
        fading: the |h|² distribution: rayleigh (h ~ CN(0, 1), the paper's), rician or none.
        rician_k: Rician K-factor (for --fading rician).
        block_s: coherence time in s: |h|² holds for one block, then is redrawn.
        interval_s: time between the starts of consecutive inferences (a cluster batch is one), a whole
            number of blocks.
        draws: channel draws (inferences) in the Table III simulation.
        channel_seed: seed of the channel draws (client c of the cluster uses channel_seed + 1 + c).
        carbon_index: kg CO2e per kWh of the client's electricity (EU average: 0.275).
        send_input: PS may also send the raw input (cut 0); the paper chooses among the layers 1..L.
        bits: payload (the values at the codec's width plus its metadata, e.g. int8 scales; float32 =
            the paper's 32 bits per element) or message (the whole codec message, header included).
    """

    arithmetic: str = field(default="float32", metadata=option(choices=ARITHMETICS))
    memory: str = field(default="dram", metadata=option(choices=MEMORIES))
    dram_pj: float = DRAM_PJ_RANGE[1]
    power: float = 1e-3
    noise_psd: float = 1e-9
    bandwidth: float = 5e6
    bandwidths: tuple[float, ...] = (15e3, 5e6, 15e6)
    path_loss_db: float = 0.0
    fading: str = field(default="rayleigh", metadata=option(choices=FADING))
    rician_k: float = 1.0
    block_s: float = 0.01
    interval_s: float = 1.0
    draws: int = 1000
    channel_seed: int = 0
    carbon_index: float = EU_CARBON_INDEX
    send_input: bool = False
    bits: str = field(default="payload", metadata=option(choices=BIT_COUNTS))

    def __post_init__(self) -> None:
        object.__setattr__(self, "bandwidths", tuple(float(w) for w in self.bandwidths))
        if not self.bandwidths:
            raise ValueError("bandwidths must name at least one bandwidth")
        self.hardware()
        for w in (self.bandwidth, *self.bandwidths):
            self.radio(w)
        if self.bits not in BIT_COUNTS:
            raise ValueError(f"unknown bits {self.bits!r}; choose one of {', '.join(BIT_COUNTS)}")
        if not self.carbon_index >= 0:
            raise ValueError(f"carbon_index must be >= 0 kg/kWh, got {self.carbon_index}")
        if self.channel_seed < 0:
            raise ValueError(f"channel_seed must be >= 0, got {self.channel_seed}")
        self.draws_config()

    @property
    def interval_blocks(self) -> int:
        if not (self.block_s > 0 and self.interval_s > 0):
            raise ValueError(f"block_s and interval_s must be > 0, got {self.block_s}, {self.interval_s}")
        k = round(self.interval_s / self.block_s)
        if k < 1 or not math.isclose(k * self.block_s, self.interval_s, rel_tol=1e-9):
            raise ValueError(f"interval_s {self.interval_s} must be a whole number of fading blocks of "
                             f"{self.block_s} s")
        return k

    def ps_cuts(self, depth: int) -> range:
        """The cuts PS chooses from for a model of ``depth`` layers."""
        return layer_cuts(depth, self.send_input)

    def hardware(self) -> HardwareCosts:
        return HardwareCosts(self.arithmetic, self.memory, self.dram_pj)

    def radio(self, bandwidth: float | None = None) -> Radio:
        return Radio(self.bandwidth if bandwidth is None else bandwidth, self.power, self.noise_psd,
                     self.path_loss_db)

    def draws_config(self, *, seed: int | None = None, samples: int = 1) -> Draws:
        return Draws(self.draws, self.fading, self.block_s, self.interval_blocks,
                     self.channel_seed if seed is None else seed, self.rician_k, samples)

    def replace(self, **changes) -> "EnergyConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class EnergySplitConfig:
    """Train, compress and split a model for energy-aware inference on a Ray cluster.

    Args:
        energy: the energy model (see EnergyConfig).
        model: the network (``raysplit.models.MODELS``; the paper's is mnist_cnn).
        dataset: the data set (``raysplit.data.DATASETS``).
        data_dir: data set folder (default: $RAYSPLIT_DATA, then the system folder).
        image_size: square image side in px (default: the data set's native size; MNIST 28, as in the
            paper).
        train_subset: train on a class-stratified subset of this many samples (all = every one).
        test_subset: infer on a class-stratified subset of this many test samples (all = every one).
        epochs: epochs of the plain loss, from which both models go on.
        sparse_epochs: then this many more epochs of the plain loss (the original model) and of eq. 10 (the
            sparsified one), on the same batches.
        batch_size: training batch (the paper: 64).
        lr: Adam's learning rate (the paper: 1e-3).
        l1: 1 - mu of eq. 10, the weight of the L1 term (the paper's mu = 0.9999: 1e-4).
        prune_threshold: parameters of magnitude below this are pruned after training.
        seed: initialisation and shuffling seed.
        train_cpus: CPUs (and torch threads) of the training task.
        models_from: a run directory of this job whose models/ to reuse instead of training (none = train).
        codec: wire encoding of the cut's representation: float32, float16, int8 or uint8 (no lz4/zstd: the cut
            is chosen from the size before sending).
        policy: how each client picks its cut per batch: ps (least energy, the paper's), pool-1 (after the
            first pooling layer), softmax (all layers, send the class scores), input (send the raw input).
        clients: emulated edge clients, each with its own fading channel and share of the test set.
        shards: server shards, each holding the whole model; client c uses shard c % shards.
        infer_batch: samples per inference message (1 = one channel draw per sample, as in the paper).
        shard_cpus: Ray num_cpus of each shard actor.
        out: run directory.
        tenant: the tenant this run belongs to (records and every wire message carry it).
        run_id: this run's identity in records (default: energy_split-<time>-<random>).
        progress: show progress.
    """

    energy: EnergyConfig = field(default_factory=EnergyConfig)
    model: str = field(default="mnist_cnn", metadata=option(choices=lambda: tuple(MODELS)))
    dataset: str = field(default="mnist", metadata=option(choices=lambda: tuple(DATASETS)))
    data_dir: str | None = field(default=None, metadata=option(none_word="default"))
    image_size: int | None = field(default=None, metadata=option(none_word="native"))
    train_subset: int | None = field(default=10000, metadata=option(none_word="all"))
    test_subset: int | None = field(default=2000, metadata=option(none_word="all"))
    epochs: int = 2
    sparse_epochs: int = 2
    batch_size: int = 64
    lr: float = 1e-3
    l1: float = 1e-4
    prune_threshold: float = 0.02
    seed: int = 0
    train_cpus: int = 2
    models_from: str | None = field(default=None, metadata=option(none_word="none"))
    codec: str = field(default="float32", metadata=option(parse=_codec_spec))
    policy: str = field(default="ps", metadata=option(choices=POLICIES))
    clients: int = 4
    shards: int = 1
    infer_batch: int = 1
    shard_cpus: float = 1.0
    out: str = "runs/energy_split"
    tenant: str = "default"
    run_id: str | None = field(default=None, metadata=option(none_word="auto"))
    progress: bool = True

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown data set {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}; choose one of {', '.join(POLICIES)}")
        check_at_least(self, {"epochs": 1, "sparse_epochs": 1, "batch_size": 1, "clients": 1, "infer_batch": 1})
        if not 1 <= self.shards <= self.clients:
            raise ValueError(f"shards must be in 1..clients ({self.clients}), got {self.shards}")
        check_counts_or_none(self, ("train_subset", "test_subset", "image_size"))
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.l1 < 1.0:
            raise ValueError(f"l1 (1 - mu of eq. 10) must be in [0, 1), got {self.l1}")
        if not self.prune_threshold >= 0:
            raise ValueError(f"prune_threshold must be >= 0, got {self.prune_threshold}")
        if self.shard_cpus < 0 or self.seed < 0 or not self.train_cpus >= 1:
            raise ValueError(f"need shard_cpus >= 0, seed >= 0, train_cpus >= 1; got {self.shard_cpus}, {self.seed}, "
                             f"{self.train_cpus}")
        _codec_spec(self.codec)
        from raysplit.config.train import _NAME  # the same rule as the training job's

        for name in ("tenant", "run_id"):
            v = getattr(self, name)
            if v is not None and not _NAME.match(v):
                raise ValueError(f"{name} {v!r} invalid: 1-64 characters of letters, digits, '_', '.', '-', "
                                 f"starting with a letter or digit")

    @property
    def mu(self) -> float:
        """μ of eq. 10."""
        return 1.0 - self.l1

    def replace(self, **changes) -> "EnergySplitConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
