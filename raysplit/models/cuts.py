"""Cut a model's layer list at one or more points.

One point n gives the usual split: the head (layers 1..n, on the client) and the tail
(n+1..L with the classifier, on the server). Two points n < m give head / middle / tail,
the shape of U-shaped (label-private) training, where the middle runs on the server and
the tail comes back to the client. A per-inference split choice cuts the same layers at
another point; the same seed gives the same weights at every cut, so pieces cut in
different processes (or at different points) compose into one network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from raysplit.models.registry import build_layers, get_model


@dataclass
class CutModel:
    """A model cut at ``points``.

    Attributes:
        pieces: len(points) + 1 sequentials, in order (a piece may be empty).
        points: the layer boundaries cut at, ascending.
        shapes: per-sample output shape at each point (the activation that crosses it).
    """

    pieces: list[nn.Sequential]
    points: tuple[int, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def head(self) -> nn.Sequential:
        return self.pieces[0]

    @property
    def tail(self) -> nn.Sequential:
        return self.pieces[-1]


def cut_model(
    name: str,
    points: tuple[int, ...] | int,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    seed: int | None = None,
) -> CutModel:
    """Build ``name`` and cut it after each layer count in ``points`` (0 = before the
    first layer: the raw input crosses). Raises ValueError naming a bad point, or the
    input size that works when the input is too small for the network."""
    points = (points,) if isinstance(points, int) else tuple(int(p) for p in points)
    if seed is not None:
        torch.manual_seed(seed)
    layers = build_layers(name, input_shape[0], num_classes)
    n = len(layers)
    if not points:
        raise ValueError("need at least one cut point")
    for p in points:
        if not 0 <= p < n:
            raise ValueError(
                f"split_layer {p} out of range for {name}: allowed 0..{n - 1} (layer {n} is the classifier)"
            )
    if list(points) != sorted(set(points)):
        raise ValueError(f"cut points must be strictly ascending, got {list(points)}")
    bounds = (0, *points, n)
    pieces = [nn.Sequential(*layers[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    shapes = _probe(name, pieces, input_shape)
    return CutModel(pieces, points, shapes)


def _probe(name: str, pieces: list[nn.Sequential], input_shape: tuple[int, int, int]) -> tuple[tuple[int, ...], ...]:
    """Run a zero sample through the pieces: the shape at every cut, and an early,
    clear error when the input is too small for the network's pooling."""
    shapes = []
    with torch.no_grad():
        for p in pieces:
            p.eval()
        try:
            x = torch.zeros(1, *input_shape)
            for p in pieces[:-1]:
                x = p(x)
                shapes.append(tuple(x.shape[1:]))
            pieces[-1](x)
        except RuntimeError as e:
            need = get_model(name).min_input_size
            raise ValueError(
                f"{name} cannot take inputs of shape {tuple(input_shape)}: it needs images of at least "
                f"{need}x{need} px (--image-size {need} or more) ({str(e).splitlines()[0]})"
            ) from None
        finally:
            for p in pieces:
                p.train()
    return tuple(shapes)
