"""How a network is split and compressed: what both halves need to build themselves alike."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from raysplit.codec import CodecConfig
from raysplit.compression.module import MASKS
from raysplit.config.cli import option
from raysplit.models.registry import MODELS, get_model


def _codec_spec(text: str) -> str:
    CodecConfig.parse(text)  # raises ValueError naming what is allowed
    return text


@dataclass(frozen=True)
class SplitConfig:
    """How a network is split and compressed (the same on every client and shard).

    Args:
        model: the network (``raysplit.models.MODELS``).
        split_layer: n: the client runs layers 1..n (0 = send the raw input); default = the model's
            (VGG: after [64, M, 128, M], 128 channels at 8x8 on 32 px inputs).
        input_shape: (C, H, W) of one sample (filled from the data set).
        num_classes: classes of the task (filled from the data set).
        use_module: whether the compression module runs (set by the method: 'none' has none).
        resolution: r of the compression conv (kernel 2+r, stride r, padding r).
        compressed_channels: φ, channels after the compression conv (default φ̃, the split's channels).
        mask: f from f̂: sigmoid2 (the authors' code, sigmoid squared) or sigmoid (the paper's text).
        init_scale: f̂ is initialised as init_scale·U(0,1) (the authors use 15).
        delta: δ of pruneLoss (authors' code: 0.1).
        epsilon: ε, the weight of pruneLoss in totalLoss (authors' code: 1000).
        lam: λ of pruneLoss, in [0, 1] (authors' code: 1).
        codec: wire encoding: float32|float16|int8|uint8, optionally +lz4 or +zstd[:level].
        momentum: SGD momentum.
        weight_decay: SGD weight decay (the paper: 5e-4); the filter f̂ is not decayed, since decay
            would pull every channel towards half on.
        seed: initialisation and shuffling seed; every process builds the same weights from it.
        bottleneck: BottleFit: replace the model's layers up to the split with an encoder ending in a conv
            bottleneck of this many channels and a decoder (``raysplit.models.bottleneck``); the bottleneck is what
            travels (none = the model as is).
        teacher: model file of the trained model without compression (a 'none' run's models/budget_<C>.pt) that a
            bottleneck student distils from; its later layers initialise the student's (none = no teacher: the
            student trains from scratch).
        kd_alpha: KD (BottleFit eq. 6): weight of the hard-label loss; 1 - alpha weighs the teacher's soft targets.
        kd_tau: KD temperature.
        torch_threads: torch intra-op threads per process (default: 1 in each client, the shard's CPUs).
        u_cut: U-shaped (label-private) training: the second cut m > split_layer; the server runs layers
            split_layer+1..m only and the client keeps m+1.. with the classifier and the labels (--mode ushaped
            sets it to just before the classifier; none = not U-shaped).
    """

    model: str = field(default="vgg_small", metadata=option(choices=lambda: tuple(MODELS)))
    split_layer: int | None = field(default=None, metadata=option(none_word="default"))
    input_shape: tuple[int, int, int] = field(default=(1, 32, 32), metadata=option(cli=False))
    num_classes: int = field(default=10, metadata=option(cli=False))
    use_module: bool = field(default=True, metadata=option(cli=False))
    resolution: int = 1
    compressed_channels: int | None = field(default=None, metadata=option(none_word="default"))
    mask: str = field(default="sigmoid2", metadata=option(choices=MASKS))
    init_scale: float = 15.0
    delta: float = 0.1
    epsilon: float = 1000.0
    lam: float = 1.0
    codec: str = field(default="float32", metadata=option(parse=_codec_spec))
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    bottleneck: int | None = None
    teacher: str | None = None
    kd_alpha: float = 0.5
    kd_tau: float = 1.0
    torch_threads: int | None = field(default=None, metadata=option(flag="threads", none_word="default"))
    u_cut: int | None = field(default=None, metadata=option(none_word="none"))

    def __post_init__(self) -> None:
        spec = get_model(self.model)
        if self.split_layer is None:
            object.__setattr__(self, "split_layer", spec.default_split)
        if self.split_layer < 0:
            raise ValueError(f"split_layer must be >= 0, got {self.split_layer}")
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ValueError(f"input_shape must be (C, H, W) with positive entries, got {self.input_shape}")
        if self.mask not in MASKS:
            raise ValueError(f"unknown mask {self.mask!r}; choose one of {', '.join(MASKS)}")
        if self.resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {self.resolution}")
        if self.compressed_channels is not None and self.compressed_channels < 1:
            raise ValueError(f"compressed_channels must be >= 1, got {self.compressed_channels}")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {self.lam}")
        if self.delta <= 0 or self.epsilon < 0:
            raise ValueError(f"need delta > 0 and epsilon >= 0, got delta={self.delta}, epsilon={self.epsilon}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.bottleneck is not None and self.bottleneck < 1:
            raise ValueError(f"bottleneck must be >= 1 channels (or none), got {self.bottleneck}")
        if self.teacher is not None and self.bottleneck is None:
            raise ValueError(f"teacher {self.teacher!r} given without --bottleneck: only a bottleneck student distils")
        if not 0.0 <= self.kd_alpha <= 1.0 or not self.kd_tau > 0:
            raise ValueError(f"need kd_alpha in [0, 1] and kd_tau > 0, got {self.kd_alpha}, {self.kd_tau}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1, got {self.torch_threads}")
        if self.u_cut is not None and self.u_cut <= self.split_layer:
            raise ValueError(f"u_cut {self.u_cut} must come after split_layer {self.split_layer} (the server runs "
                             f"the layers between them)")
        self.codec_config()  # validates the codec spec

    def codec_config(self) -> CodecConfig:
        return CodecConfig.parse(self.codec)

    def replace(self, **changes) -> "SplitConfig":
        return dataclasses.replace(self, **changes)
