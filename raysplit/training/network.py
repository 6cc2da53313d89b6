"""Build both halves of a compression-aware split network from one SplitConfig."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from raysplit.compression.module import Compressor, Decompressor, compressed_size
from raysplit.config.split import SplitConfig
from raysplit.models.cuts import cut_model


@dataclass
class SplitNetwork:
    """Attributes:
    head, compressor: the client's part (compressor None without the module).
    decompressor, tail: the server's part.
    split_shape: (φ̃, H, W) of l_n per sample.
    wire_shape: (φ, H', W') of what may travel per sample (all channels).
    decoder: a bottleneck student's decoder, the server's part before ``tail`` (None otherwise).
    target_shape: a bottleneck student's teacher activation at the split, per sample (() otherwise).
    """

    head: nn.Sequential
    compressor: Compressor | None
    decompressor: Decompressor | None
    tail: nn.Sequential
    split_shape: tuple[int, ...]
    wire_shape: tuple[int, ...]
    decoder: nn.Sequential | None = None
    target_shape: tuple[int, ...] = ()

    @property
    def channels(self) -> int:
        """φ: the number of channels a budget selects from."""
        return self.wire_shape[0]


def build_network(cfg: SplitConfig) -> SplitNetwork:
    """Deterministic for ``cfg.seed``: every process builds the same weights."""
    if cfg.torch_threads is not None:
        torch.set_num_threads(cfg.torch_threads)
    if cfg.bottleneck is not None:  # BottleFit: encoder (head), decoder + the teacher's later layers (tail)
        if cfg.use_module:
            raise ValueError("a bottleneck student has no Prune-Deprune compression module (use method none, kd, "
                             "bottlefit or bottlefit-fe)")
        from raysplit.models.bottleneck import build_student

        st = build_student(cfg.model, cfg.split_layer, cfg.bottleneck, cfg.input_shape, cfg.num_classes, seed=cfg.seed)
        return SplitNetwork(st.encoder, None, None, st.rest, st.bottleneck_shape, st.bottleneck_shape, st.decoder,
                            st.target_shape)
    cm = cut_model(cfg.model, cfg.split_layer, cfg.input_shape, cfg.num_classes, seed=cfg.seed)
    split_shape = cm.shapes[0]
    if not cfg.use_module:
        return SplitNetwork(cm.head, None, None, cm.tail, split_shape, split_shape)
    if len(split_shape) != 3:
        raise ValueError(f"the compression module needs a (C, H, W) activation, split gives {split_shape}")
    c_in, h, w = split_shape
    phi = cfg.compressed_channels or c_in
    comp = Compressor(c_in, phi, cfg.resolution, cfg.mask, cfg.init_scale)
    decomp = Decompressor(phi, c_in, (h, w), cfg.resolution)
    wire = (phi, *compressed_size((h, w), cfg.resolution))
    return SplitNetwork(cm.head, comp, decomp, cm.tail, split_shape, wire)


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" picks CUDA when this process can see a GPU and falls back to the CPU;
    "cuda" without a GPU is an error rather than a silent CPU run."""
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; choose auto, cpu or cuda")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA GPU is visible to this process")
    return torch.device("cuda")
