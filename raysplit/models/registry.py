"""The model zoo as a registry: name -> :class:`ModelSpec`, looked up with :func:`get_model`.

Every model is a flat list of layers whose boundaries are split points (``cuts.py``
cuts it at one or more of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from raysplit.models.mnist_cnn import mnist_cnn_layers
from raysplit.models.torchvision_nets import mobilenet_v2_layers, resnet18_imagenet_layers, resnet18_layers
from raysplit.models.vgg import VGG11, VGG_SMALL, vgg_layers


@dataclass(frozen=True)
class ModelSpec:
    """Args:
    name: the CLI name.
    build: (in_channels, num_classes) -> the list of layers, classifier last.
    default_split: the split layer n used when none is given.
    min_input_size: the smallest square input side (px) the network accepts; below it a
        pooling or strided layer runs out of pixels (``tests/test_models.py`` checks it).
    summary: one line for --help and the README.
    """

    name: str
    build: Callable[[int, int], list[nn.Module]]
    default_split: int
    min_input_size: int
    summary: str


MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec("vgg11", lambda c, k: vgg_layers(VGG11, c, k), 4, 32,
                  "VGG11 with batch norm, the paper's model; split after [64, M, 128, M]"),
        ModelSpec("vgg_small", lambda c, k: vgg_layers(VGG_SMALL, c, k), 4, 16,
                  "the same head and split shape as vgg11, a much thinner tail (CPU-sized)"),
        ModelSpec("resnet18", resnet18_layers, 3, 1, "ResNet-18, CIFAR stem; split after the first stage"),
        ModelSpec("resnet18_imagenet", resnet18_imagenet_layers, 3, 1,
                  "ResNet-18 with the 7x7/2 stem and max-pool"),
        ModelSpec("mobilenet_v2", mobilenet_v2_layers, 4, 1, "MobileNetV2; split after block 3 (24 channels)"),
        ModelSpec("mnist_cnn", mnist_cnn_layers, 2, 1,
                  "Krouka et al.'s MNIST CNN (4 conv 5x5 16/32/48/64 + pools, fc 512/256/128/64/10); split after pool 1"),
    )
}


def get_model(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name]


def build_layers(name: str, in_channels: int, num_classes: int) -> list[nn.Module]:
    spec = get_model(name)
    if in_channels < 1 or num_classes < 2:
        raise ValueError(f"need in_channels >= 1 and num_classes >= 2, got {in_channels}, {num_classes}")
    return spec.build(in_channels, num_classes)
