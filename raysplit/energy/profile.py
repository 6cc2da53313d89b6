"""What running a model up to each cut costs, counted layer by layer from its weights.

For every layer of a flat layer list (``raysplit.models``), per sample:

* **multiplications and additions** (for eq. 1). A convolution or fully connected output
  costs one multiplication per *non-zero* weight in its filter and one addition per
  non-zero weight beyond the first, plus one for a non-zero bias: a pruned weight is
  neither fetched nor multiplied (a sparse kernel, whose index overhead is not counted).
  Zero-padded taps at the borders are counted like the others (the kernel runs them).
  ReLU costs one comparison per element and a max-pool one per window element beyond the
  first, each counted as an addition (Table I has no comparison); an average pool adds
  the same and multiplies once per output; batch norm (folded) one multiply-add per
  element. Flatten and dropout cost nothing. The softmax of the last layer is not run:
  the class scores are sent, and the class is their argmax either way.
* **elements fetched** (Γ of eq. 2): the layer's non-zero weights and biases, fetched once
  per inference (the paper counts weights and biases only, not activations).
* **what a cut sends**: the channels (of a feature map) or neurons (of a vector) that
  depend on the input *and* are used after the cut. Pruning can leave a unit with no
  non-zero weight from any input-dependent unit (it is then a constant the server can
  compute itself) or with no non-zero weight to any used unit (nothing after the cut
  reads it); such units are not sent. This is the paper's "eliminating entire neurons
  after pruning"; for a dense model every unit is sent.

An unknown layer type is an error naming it, never a silent zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from raysplit.energy.costs import HardwareCosts
from raysplit.energy.energy import computation_energy, memory_energy

_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.Identity, nn.Dropout, nn.Dropout2d)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)


@dataclass(frozen=True)
class LayerCost:
    """One layer, per sample.

    Args:
        name: conv<k>, pool<k> or fc<k> (numbered by kind, as in the paper), else the type.
        mults, adds: multiplications and additions (comparisons included) to run it.
        params: non-zero weights and biases (elements fetched).
        dense_params: all its weights and biases.
        shape: the representation after it (per sample).
        sent: indices of the channels (or neurons) a cut after it sends.
    """

    name: str
    mults: int
    adds: int
    params: int
    dense_params: int
    shape: tuple[int, ...]
    sent: tuple[int, ...]


@dataclass(frozen=True)
class ModelProfile:
    """Costs of a model cut anywhere: cut 0 sends the input, cut L the class scores.

    Args:
        model: its name.
        input_shape: the per-sample input.
        input_sent: the input channels used (cut 0 sends these).
        layers: one LayerCost per layer, in order.
    """

    model: str
    input_shape: tuple[int, ...]
    input_sent: tuple[int, ...]
    layers: tuple[LayerCost, ...]

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def cuts(self) -> range:
        return range(self.depth + 1)

    def names(self) -> list[str]:
        """What each cut sends: "input", then the layer names."""
        return ["input", *(lay.name for lay in self.layers)]

    def shape_at(self, cut: int) -> tuple[int, ...]:
        return self.input_shape if cut == 0 else self.layers[cut - 1].shape

    def sent_at(self, cut: int) -> tuple[int, ...]:
        return self.input_sent if cut == 0 else self.layers[cut - 1].sent

    def elements_at(self, cut: int) -> int:
        """Elements a cut sends per sample."""
        shape = self.shape_at(cut)
        return len(self.sent_at(cut)) * math.prod(shape[1:])

    def cut_named(self, name: str) -> int:
        names = self.names()
        if name not in names:
            raise ValueError(f"{self.model} has no layer {name!r}; its cuts are {', '.join(names)}")
        return names.index(name)

    @property
    def params(self) -> int:
        return sum(lay.params for lay in self.layers)

    @property
    def dense_params(self) -> int:
        return sum(lay.dense_params for lay in self.layers)

    def processing(self, costs: HardwareCosts) -> tuple[np.ndarray, np.ndarray]:
        """(E_c, E_m) per sample of running layers 1..l, for every cut l = 0..L (joules)."""
        compute = np.cumsum([0.0] + [computation_energy(lay.mults, lay.adds, costs) for lay in self.layers])
        memory = np.cumsum([0.0] + [memory_energy(lay.params, costs) for lay in self.layers])
        return compute, memory

    def layer_table(self, costs: HardwareCosts) -> list[dict]:
        """Per layer (the paper's Fig. 3): processing energy, output size, parameters."""
        rows = []
        for lay in self.layers:
            e_c, e_m = computation_energy(lay.mults, lay.adds, costs), memory_energy(lay.params, costs)
            rows.append({"layer": lay.name, "mults": lay.mults, "adds": lay.adds, "params": lay.params,
                         "dense_params": lay.dense_params, "processing_j": e_c + e_m, "compute_j": e_c,
                         "memory_j": e_m, "output_elements": math.prod(lay.shape),
                         "sent_elements": len(lay.sent) * math.prod(lay.shape[1:])})
        return rows


# -- counting ---------------------------------------------------------------------------


def _leaves(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        return [leaf for m in module for leaf in _leaves(m)]
    return [module]


def _windows(size: int, out: int, kernel: int, stride: int, padding: int) -> np.ndarray:
    """Input elements in each output window along one axis (padding excluded)."""
    start = np.arange(out) * stride - padding
    return np.clip(start + kernel, 0, size) - np.clip(start, 0, size)


def _adaptive_windows(size: int, out: int) -> np.ndarray:
    j = np.arange(out)
    return -((-(j + 1) * size) // out) - (j * size) // out  # ceil((j+1)·size/out) - floor(j·size/out)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _pool_windows(m: nn.Module, shape: tuple[int, ...], out: tuple[int, ...]) -> int:
    """Sum over the outputs of one channel of their window sizes."""
    (h, w), (oh, ow) = shape[1:], out[1:]
    if isinstance(m, (nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)):
        rows, cols = _adaptive_windows(h, oh), _adaptive_windows(w, ow)
    else:
        k, s, p = _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding)
        if isinstance(m, nn.MaxPool2d) and _pair(m.dilation) != (1, 1):
            raise ValueError("energy profile: dilated max-pooling is not counted")
        rows, cols = _windows(h, oh, k[0], s[0], p[0]), _windows(w, ow, k[1], s[1], p[1])
    return int(rows.sum() * cols.sum())


class _Walk:
    """Forward through the leaves: shapes, operations, and which units depend on the input;
    each weighted leaf's unit connectivity is kept for the backward "used" pass."""

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        self.shape = tuple(input_shape)
        self.dep = np.ones(self.shape[0], dtype=bool)  # per unit (channel or neuron)
        self.links: list[tuple[str, object]] = []  # ("matrix", M[out, in]) | ("flatten", spatial)

    def leaf(self, m: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int, int, int, int]:
        """Apply m; return (output, mults, adds, non-zero params, params)."""
        y = m(x)
        out = tuple(y.shape[1:])
        spatial = math.prod(out[1:]) if len(out) > 1 else 1
        mults = adds = nnz = total = 0
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if isinstance(m, nn.Conv2d) and m.groups != 1:
                raise ValueError(f"energy profile: grouped convolution ({m}) is not counted")
            w = m.weight.detach()
            nz = (w != 0).reshape(w.shape[0], w.shape[1], -1)
            per_out = nz.sum(dim=(1, 2)).numpy()
            bias = (m.bias.detach() != 0).numpy() if m.bias is not None else np.zeros(w.shape[0], dtype=bool)
            mults = int(spatial * per_out.sum())
            adds = int(spatial * np.maximum(per_out - 1 + bias, 0).sum())
            nnz = int(per_out.sum() + bias.sum())
            total = w.numel() + (m.bias.numel() if m.bias is not None else 0)
            matrix = nz.any(dim=2).numpy()  # [out, in]: any non-zero weight between the two
            self.dep = (matrix & self.dep[None, :]).any(axis=1)
            self.links.append(("matrix", matrix))
        elif isinstance(m, _ELEMENTWISE):
            if not isinstance(m, (nn.Identity, nn.Dropout, nn.Dropout2d)):
                adds = math.prod(out)
        elif isinstance(m, _POOLS):
            windows = _pool_windows(m, self.shape, out)
            adds = out[0] * (windows - math.prod(out[1:]))
            if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
                mults = math.prod(out)
        elif isinstance(m, nn.BatchNorm2d):
            mults = adds = math.prod(out)
            params = [m.weight, m.bias] if m.affine else []
            nnz = int(sum((p.detach() != 0).sum() for p in params)) or 2 * out[0]
            total = 2 * out[0]
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise ValueError(f"energy profile: only Flatten(1, -1) is counted, got {m}")
            per = math.prod(self.shape[1:])
            self.dep = np.repeat(self.dep, per)
            self.links.append(("flatten", per))
        else:
            raise ValueError(f"energy profile: no operation count for layer type {type(m).__name__}; "
                             f"supported: Conv2d, Linear, ReLU, pools, BatchNorm2d, Flatten, Dropout")
        self.shape = out
        return y, mults, adds, nnz, total


def _used_before(links: list[tuple[str, object]], used: np.ndarray) -> np.ndarray:
    """Back through one layer's links: the units before it that reach a used unit."""
    for kind, link in reversed(links):
        if kind == "matrix":
            used = (link & used[:, None]).any(axis=0)
        else:  # flatten: a channel is used when any of its positions is
            used = used.reshape(-1, link).any(axis=1)
    return used


def _name(layer: nn.Module, counts: dict[str, int]) -> str:
    leaves = _leaves(layer)
    if any(isinstance(m, nn.Linear) for m in leaves):
        kind = "fc"
    elif any(isinstance(m, nn.Conv2d) for m in leaves):
        kind = "conv"
    elif all(isinstance(m, _POOLS) for m in leaves):
        kind = "pool"
    else:
        kind = type(leaves[0]).__name__.lower()
    counts[kind] = counts.get(kind, 0) + 1
    return f"{kind}{counts[kind]}"


@torch.no_grad()
def profile_model(name: str, layers: nn.Sequential | list[nn.Module], input_shape: tuple[int, ...]) -> ModelProfile:
    """Count ``layers`` (with their current weights; zeros are pruned weights) on one
    sample of ``input_shape``. Runs in eval mode on the CPU; the layers are left as found."""
    layers = list(layers)
    seq = nn.Sequential(*layers)
    was = seq.training
    seq.eval()
    try:
        walk = _Walk(tuple(input_shape))
        x = torch.zeros(1, *input_shape)
        deps, links, rows, counts = [walk.dep], [], [], {}
        for layer in layers:
            start = len(walk.links)
            mults = adds = nnz = total = 0
            for leaf in _leaves(layer):
                x, m_, a_, n_, t_ = walk.leaf(leaf, x)
                mults, adds, nnz, total = mults + m_, adds + a_, nnz + n_, total + t_
            links.append(walk.links[start:])
            deps.append(walk.dep)
            rows.append((_name(layer, counts), mults, adds, nnz, total, walk.shape))
    finally:
        seq.train(was)
    # Backward: every class score is used; a unit is used if it reaches a used unit.
    used = [np.ones_like(deps[-1])]
    for lk in reversed(links):
        used.append(_used_before(lk, used[-1]))
    used.reverse()
    sent = [tuple(int(i) for i in np.flatnonzero(d & u)) for d, u in zip(deps, used)]
    costs = tuple(LayerCost(n, m, a, p, t, s, sent[i + 1]) for i, (n, m, a, p, t, s) in enumerate(rows))
    return ModelProfile(name, tuple(input_shape), sent[0], costs)
