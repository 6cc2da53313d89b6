"""Build a model by name and cut it after layer n into a client head and a server tail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from raysplit.models.torchvision_nets import mobilenet_v2_layers, resnet18_imagenet_layers, resnet18_layers
from raysplit.models.vgg import VGG11, VGG_SMALL, vgg_layers

_BUILDERS: dict[str, Callable[[int, int], list[nn.Module]]] = {
    "vgg11": lambda c, k: vgg_layers(VGG11, c, k),
    "vgg_small": lambda c, k: vgg_layers(VGG_SMALL, c, k),
    "resnet18": resnet18_layers,
    "resnet18_imagenet": resnet18_imagenet_layers,
    "mobilenet_v2": mobilenet_v2_layers,
}
MODELS = tuple(_BUILDERS)
# Default split layer per model: VGG after [64, M, 128, M] (the paper's), ResNet after
# the stem + first stage, MobileNetV2 after block 3 (24 channels).
DEFAULT_SPLIT = {"vgg11": 4, "vgg_small": 4, "resnet18": 3, "resnet18_imagenet": 3, "mobilenet_v2": 4}


def build_layers(name: str, in_channels: int, num_classes: int) -> list[nn.Module]:
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if in_channels < 1 or num_classes < 2:
        raise ValueError(f"need in_channels >= 1 and num_classes >= 2, got {in_channels}, {num_classes}")
    return _BUILDERS[name](in_channels, num_classes)


@dataclass
class SplitModel:
    """A model cut after layer ``split_layer``.

    Attributes:
        head: layers 1..n (runs on the client); an empty Sequential when n = 0.
        tail: layers n+1..L (runs on the server), classifier included.
        split_shape: (C, H, W) of the head's output l_n for one sample.
    """

    head: nn.Sequential
    tail: nn.Sequential
    split_layer: int
    split_shape: tuple[int, ...]


def split_model(
    name: str,
    split_layer: int,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    seed: int | None = None,
) -> SplitModel:
    """Build ``name`` and cut it after ``split_layer`` layers (0 = offload the raw input).

    The same seed gives the same weights on every process, so a client that builds the
    model and keeps the head and a server that builds it and keeps the tail hold the
    halves of one initialisation.
    """
    if seed is not None:
        torch.manual_seed(seed)
    layers = build_layers(name, input_shape[0], num_classes)
    if not 0 <= split_layer < len(layers):
        raise ValueError(
            f"split_layer {split_layer} out of range for {name}: allowed 0..{len(layers) - 1} "
            f"(layer {len(layers)} is the classifier)"
        )
    head = nn.Sequential(*layers[:split_layer])
    tail = nn.Sequential(*layers[split_layer:])
    with torch.no_grad():
        head.eval()
        tail.eval()
        try:
            probe = head(torch.zeros(1, *input_shape))
            tail(probe)
        except RuntimeError as e:
            raise ValueError(
                f"{name} cannot take inputs of shape {tuple(input_shape)} (too small for its pooling?): {e}"
            ) from None
        head.train()
        tail.train()
    if probe.dim() < 2:
        raise ValueError(f"split after layer {split_layer} of {name} gives shape {tuple(probe.shape)}")
    return SplitModel(head=head, tail=tail, split_layer=split_layer, split_shape=tuple(probe.shape[1:]))
