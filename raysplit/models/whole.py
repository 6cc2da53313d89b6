"""A whole model that can be entered and left at any of its split points.

Krouka et al.'s server holds a copy of the client's whole model and "starts from the
layer named in the message"; the client runs the same model up to the cut it chose. Both
are a :class:`WholeModel`: the flat layer list of a registered model as one
``nn.Sequential`` (so ``run(x, a, b)`` applies layers a+1..b), and the per-sample shape
of the representation at every cut 0..L (0 = the raw input, L = the class scores).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from raysplit.models.registry import build_layers, get_model


@dataclass
class WholeModel:
    """Attributes:
    name: the registered model's name.
    layers: all L layers, in order.
    shapes: per-sample shape after each cut 0..L (shapes[0] is the input's).
    """

    name: str
    layers: nn.Sequential
    shapes: tuple[tuple[int, ...], ...]

    @property
    def depth(self) -> int:
        """L: the number of layers (cuts are 0..L)."""
        return len(self.layers)

    def check_cut(self, cut: int, what: str = "cut") -> int:
        if not 0 <= int(cut) <= self.depth:
            raise ValueError(f"{what} {cut} out of range for {self.name}: allowed 0..{self.depth} "
                             f"(0 = the raw input, {self.depth} = the class scores)")
        return int(cut)

    def run(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Layers start+1..stop applied to the representation at cut ``start``."""
        start, stop = self.check_cut(start, "start"), self.check_cut(stop, "stop")
        if start > stop:
            raise ValueError(f"cannot run backwards from cut {start} to {stop}")
        return self.layers[start:stop](x)


def whole_model(name: str, input_shape: tuple[int, int, int], num_classes: int, *,
                seed: int | None = None) -> WholeModel:
    """Build ``name`` whole (deterministic for ``seed``) and probe the shape at every cut;
    an input too small for the network is a clear error naming the size that works."""
    if seed is not None:
        torch.manual_seed(seed)
    layers = nn.Sequential(*build_layers(name, input_shape[0], num_classes))
    shapes = [tuple(int(v) for v in input_shape)]
    was = layers.training
    layers.eval()
    try:
        with torch.no_grad():
            x = torch.zeros(1, *input_shape)
            for layer in layers:
                x = layer(x)
                shapes.append(tuple(x.shape[1:]))
    except RuntimeError as e:
        need = get_model(name).min_input_size
        raise ValueError(f"{name} cannot take inputs of shape {tuple(input_shape)}: it needs images of at least "
                         f"{need}x{need} px ({str(e).splitlines()[0]})") from None
    finally:
        layers.train(was)
    return WholeModel(name, layers, tuple(shapes))
