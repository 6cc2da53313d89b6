"""Frozen, validated configuration shared by the local trainer and the cluster.

``SplitConfig`` is everything both halves of a split network need to build themselves
identically (model, split point, compression module, loss constants, codec, optimizer).
``TrainConfig`` adds the data and the budget schedule for one run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from raysplit.codec import CodecConfig
from raysplit.compression.module import MASKS
from raysplit.models.registry import DEFAULT_SPLIT, MODELS
from raysplit.budget.schedule import METHODS, Schedule, broadcast_epochs, check_method_budgets


@dataclass(frozen=True)
class SplitConfig:
    """How a network is split and compressed.

    Args:
        model: one of ``raysplit.models.MODELS``.
        split_layer: n; the client runs layers 1..n (0 = send the raw input). None = the
            model's default (VGG: after [64, M, 128, M]).
        input_shape: (C, H, W) of one sample.
        num_classes: classes of the task.
        use_module: False = plain split learning (method "none"): l_n travels as is.
        resolution: r of the compression conv (kernel 2+r, stride r, padding r).
        compressed_channels: φ, channels after the compression conv (None = φ̃).
        mask: "sigmoid2" (authors' code, default) or "sigmoid" (paper text).
        init_scale: f̂ initialised as init_scale·U(0,1).
        delta, epsilon, lam: δ, ε, λ of pruneLoss/totalLoss (authors' code: 0.1, 1000, 1).
        codec: wire encoding spec, e.g. "float32", "float16+lz4", "int8+zstd".
        momentum, weight_decay: SGD settings (paper: weight decay 5e-4). The filter f̂ is
            not decayed: decay would pull every channel towards "half on".
        seed: initialisation seed; both halves use it so they form one network.
        torch_threads: intra-op threads for torch in this process (None = leave as is).
    """

    model: str = "vgg_small"
    split_layer: int | None = None
    input_shape: tuple[int, int, int] = (1, 32, 32)
    num_classes: int = 10
    use_module: bool = True
    resolution: int = 1
    compressed_channels: int | None = None
    mask: str = "sigmoid2"
    init_scale: float = 15.0
    delta: float = 0.1
    epsilon: float = 1000.0
    lam: float = 1.0
    codec: str = "float32"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.split_layer is None:
            object.__setattr__(self, "split_layer", DEFAULT_SPLIT[self.model])
        if self.split_layer < 0:
            raise ValueError(f"split_layer must be >= 0, got {self.split_layer}")
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ValueError(f"input_shape must be (C, H, W) with positive entries, got {self.input_shape}")
        if self.mask not in MASKS:
            raise ValueError(f"unknown mask {self.mask!r}; choose one of {MASKS}")
        if self.resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {self.resolution}")
        if self.compressed_channels is not None and self.compressed_channels < 1:
            raise ValueError(f"compressed_channels must be >= 1, got {self.compressed_channels}")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {self.lam}")
        if self.delta <= 0 or self.epsilon < 0:
            raise ValueError(f"need delta > 0 and epsilon >= 0, got delta={self.delta}, epsilon={self.epsilon}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1, got {self.torch_threads}")
        self.codec_config()  # validates the codec spec

    def codec_config(self) -> CodecConfig:
        return CodecConfig.parse(self.codec)

    def replace(self, **changes) -> "SplitConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TrainConfig:
    """One training run: what to train, on which data, on which schedule.

    Args:
        method: "none" (no module), "fixed" (one budget), "deprune" (budgets ascending),
            "prune" (budgets descending, one saved model per budget).
        split: the network (see SplitConfig); its input_shape/num_classes are filled
            from the data set by the runner.
        dataset, data_dir, image_size: see ``raysplit.data.load_dataset`` (image_size
            None = the data set's default, e.g. 32 px for Fashion-MNIST).
        budgets, epochs_per_budget: the schedule (one epochs entry = same for every budget).
        lr, gamma, lk: base learning rate and selectLr.
        reset_filter: re-randomise filter entries at transitions (resetPrune/resetdePrune).
        batch_size: samples per step and client.
        train_subset, test_subset: use only this many samples (None = all).
        max_batches: cap on steps per epoch (None = the whole partition).
        out: run directory.
    """

    method: str = "deprune"
    split: SplitConfig = field(default_factory=SplitConfig)
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    image_size: int | None = None
    budgets: tuple[int, ...] = (4, 128)
    epochs_per_budget: tuple[int, ...] = (2, 1)
    lr: float = 0.01
    gamma: float = 1.0
    lk: int = 1
    reset_filter: bool = True
    batch_size: int = 64
    train_subset: int | None = None
    test_subset: int | None = None
    max_batches: int | None = None
    out: str = "runs/local"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        object.__setattr__(self, "budgets", tuple(int(b) for b in self.budgets))
        object.__setattr__(
            self, "epochs_per_budget", broadcast_epochs(tuple(int(e) for e in self.epochs_per_budget), len(self.budgets))
        )
        if self.method == "none" and self.split.use_module:
            object.__setattr__(self, "split", self.split.replace(use_module=False))
        if self.method != "none" and not self.split.use_module:
            raise ValueError(f"method {self.method!r} needs the compression module (split.use_module=True)")
        if self.method == "none" and len(self.budgets) != 1:
            raise ValueError(f"method 'none' sends every channel; give a single epochs entry, got budgets {self.budgets}")
        self.schedule()  # validates budgets/epochs/lr/gamma/lk
        check_method_budgets(self.method, self.budgets)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("train_subset", "test_subset", "max_batches"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {v}")

    def schedule(self) -> Schedule:
        return Schedule(self.budgets, self.epochs_per_budget, self.lr, self.gamma, self.lk)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
