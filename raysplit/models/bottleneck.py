"""The bottleneck-injected student of BottleFit (Matsubara et al. 2022, §III-B), built from a teacher.

The teacher is a trained model without compression, cut after layer n (``l_ed``): its
head t_ed (layers 1..n) and its later layers. The student replaces the head with an
**encoder** (client) that ends in a narrow conv **bottleneck** of ``channels`` channels,
and a **decoder** (server) that restores the teacher's activation at the split; the
teacher's later layers follow unchanged (and start from the teacher's weights)::

    x --encoder--> bottleneck (channels x H x W, what travels) --decoder--> like t_ed(x) --> later layers

As in the paper's ResNet-152 bottleneck (the public code's ``Bottleneck4ResNet152``), the
encoder is new and small: a 3x3 conv to ``width`` channels, a strided 3x3 conv for every
halving of the resolution but the last, and the bottleneck conv (3x3, stride 2) doing the
last; the decoder is two 3x3 convs to the teacher's channels at the split. Every conv is
followed by batch norm and ReLU (t_ed is a ReLU output too). The bottleneck keeps the
teacher's resolution at the split, so it must be the input's divided by a power of two.

Distilled points (GHND, eq. 4): the decoder's output against t_ed(x), and the output of
every later layer but the classifier (the recipe distils ResNet's later stages; raysplit's
models are flat lists whose layers are the stages).

The teacher comes from a model file (``raysplit.inference``) of a ``none`` run of the same
model, split and data shape: the client holds its head (to compute t_ed for the
distillation targets), the server its later layers (frozen, for the targets at the later
points and the soft labels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from raysplit.models.cuts import cut_model

#: Channels of the encoder's convolutions before the bottleneck.
WIDTH = 64


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


@dataclass
class Student:
    """A bottleneck-injected student.

    Attributes:
        encoder: the client's part, input -> bottleneck.
        decoder: the first part of the server's, bottleneck -> the teacher's activation at the split.
        rest: the teacher's later layers (classifier last), freshly built: load the teacher's weights.
        bottleneck_shape: (channels, H, W) of what travels, per sample.
        target_shape: (C, H, W) of the teacher's activation at the split, t_ed(x).
    """

    encoder: nn.Sequential
    decoder: nn.Sequential
    rest: nn.Sequential
    bottleneck_shape: tuple[int, int, int]
    target_shape: tuple[int, int, int]


def build_student(model: str, split_layer: int, channels: int, input_shape: tuple[int, int, int],
                  num_classes: int, *, seed: int | None = None) -> Student:
    """The student of ``model`` cut after ``split_layer`` with a ``channels`` bottleneck.

    The later layers are built exactly as the teacher's (same seed, same layers), so a
    teacher's later-layer weights load into them; then the encoder and decoder."""
    if channels < 1:
        raise ValueError(f"bottleneck channels must be >= 1, got {channels}")
    if split_layer < 1:
        raise ValueError(f"a bottleneck replaces the layers up to the split: split_layer must be >= 1, got {split_layer}")
    teacher = cut_model(model, split_layer, input_shape, num_classes, seed=seed)
    target = teacher.shapes[0]
    if len(target) != 3:
        raise ValueError(f"a bottleneck needs a (C, H, W) activation at the split; {model} gives {target}")
    c_ed, h, w = target
    c_in, h_in, w_in = input_shape
    factor = h_in // h
    if h * factor != h_in or w * factor != w_in or factor & (factor - 1):
        raise ValueError(
            f"{model} maps {h_in}x{w_in} inputs to {h}x{w} at layer {split_layer}: the bottleneck needs the input "
            "size divided by a power of two there"
        )
    halvings = int(math.log2(factor))
    encoder = [_block(c_in, WIDTH, 1)] + [_block(WIDTH, WIDTH, 2) for _ in range(max(0, halvings - 1))]
    encoder.append(_block(WIDTH, channels, 2 if halvings else 1))
    decoder = [_block(channels, c_ed, 1), _block(c_ed, c_ed, 1)]
    student = Student(nn.Sequential(*encoder), nn.Sequential(*decoder), teacher.tail, (channels, h, w), target)
    with torch.no_grad():
        z = student.encoder.eval()(torch.zeros(1, *input_shape))
        student.encoder.train()
    if tuple(z.shape[1:]) != student.bottleneck_shape:  # pragma: no cover - the arithmetic above
        raise AssertionError(f"encoder gives {tuple(z.shape[1:])}, expected {student.bottleneck_shape}")
    return student


def features(decoder: nn.Module | None, rest: nn.Sequential, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(outputs at the distilled points, logits): the decoder's output (or ``x`` itself,
    for the teacher, whose input is already its activation at the split), then every later
    layer's but the classifier's."""
    h = decoder(x) if decoder is not None else x
    out = [h]
    for layer in list(rest)[:-1]:
        h = layer(h)
        out.append(h)
    return out, rest[-1](h)


@dataclass
class Teacher:
    """A trained model without compression, frozen, in eval mode.

    Attributes:
        head: its layers up to the split (the client computes t_ed(x) with it).
        rest: its later layers (the server computes the targets at later points and the
            soft labels with it).
        path: the model file it came from.
    """

    head: nn.Sequential
    rest: nn.Sequential
    path: str


def load_teacher(path: str | Path, *, model: str, split_layer: int, input_shape: tuple[int, ...],
                 num_classes: int) -> Teacher:
    """The teacher in a model file of a ``none`` run of ``model`` cut after ``split_layer``
    on inputs of ``input_shape`` (its first client's head, when several trained). Anything
    else is an error naming the difference."""
    from raysplit.inference import load_model  # inference builds split networks, which build students

    m = load_model(path)
    s = m.split
    want = {"model": model, "split_layer": split_layer, "input_shape": tuple(input_shape), "num_classes": num_classes}
    have = {"model": s.model, "split_layer": s.split_layer, "input_shape": tuple(s.input_shape),
            "num_classes": s.num_classes}
    diff = [f"{k} {have[k]!r} (the student has {want[k]!r})" for k in want if have[k] != want[k]]
    if diff:
        raise ValueError(f"teacher {path} does not fit the student: its {', '.join(diff)}")
    if s.use_module or s.bottleneck is not None:
        raise ValueError(
            f"teacher {path} was trained with method {m.method!r}"
            + (" and a compression module" if s.use_module else " as a bottleneck student")
            + ": a teacher is the model without compression (a 'none' run)"
        )
    head, rest = m.client.head, m.server.tail.cpu()
    for part in (head, rest):
        part.eval().requires_grad_(False)
    return Teacher(head, rest, str(path))
