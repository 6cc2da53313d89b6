"""Training a split network for importance-ordered slices (NAIR) in one process.

NAIR is a fine-tuning of an already trained model before it is deployed split (the
paper fine-tunes on one GPU, then serves head and tail apart), so it runs here on head and
tail side by side, on the CPU or a GPU: no codec, no transport. The same loop trains the
original model (one slice, weight 1, no penalty) and every variant it is compared with.

A :class:`SliceObjective` is what a variant minimises (``compression.slices``):
sum_j w_j L_j + lam * P / P0 over the order's J slices. :data:`VARIANTS` names the ones of
the paper's Tables II-III:

==================  ===========  ==================  =======
variant             order        weights w_j         penalty
==================  ===========  ==================  =======
original            channel      (not fine-tuned)    -
plain               channel      whole only          no
clio                channel      rho_j (progressive) no
nair                importance   eq. 11              eq. 12
nair-no-penalty     importance   eq. 11              no
nair-no-weights     importance   1                   eq. 12
nair-neither        importance   1                   no
==================  ===========  ==================  =======

"plain" is the original trained on for as long as the others are fine-tuned, with the
ordinary loss: the control for what the extra epochs alone give. CLIO (Huang et al.,
MobiCom'20) trains the head so that the first channels carry the most
(progressive slices, each weighted by the probability that it gets through); the one-tail
deployment with zero padding is the paper's CLIO_st.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from raysplit.compression.slices import (
    SliceOrder,
    filter_importance,
    importance_weights,
    natural_order,
    padded_variants,
    penalty,
    progressive_weights,
    rank_channels,
    slice_loss,
    slice_masks,
    split_layer_filter,
)
from raysplit.data import ArrayDataset, batches
from raysplit.training.sgd import SGD
from raysplit.training.state import PrivateRng, uses_randomness

__all__ = ["Variant", "VARIANTS", "get_variant", "SliceObjective", "make_objective", "train_slices", "evaluate"]


@dataclass(frozen=True)
class Variant:
    """Args:
    name: the CLI name.
    order: "importance" (ranked by eq. 8) or "channel" (index order).
    weights: "importance" (eq. 11), "progressive" (CLIO's rho_j), "uniform" (1 each),
        "whole" (ordinary training: only the whole activation is scored) or None (not
        fine-tuned).
    penalty: whether eq. 12's penalty is added.
    summary: one line for tables.
    """

    name: str
    order: str
    weights: str | None
    penalty: bool
    summary: str


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("original", "channel", None, False, "the trained model, channels in index order, not fine-tuned"),
        Variant("plain", "channel", "whole", False, "the original trained on as long, ordinary loss (control)"),
        Variant("clio", "channel", "progressive", False, "CLIO-style: progressive slices weighted rho_j, one tail"),
        Variant("nair", "importance", "importance", True, "NAIR: importance order, eq. 11 weights, eq. 12 penalty"),
        Variant("nair-no-penalty", "importance", "importance", False, "NAIR without the penalty"),
        Variant("nair-no-weights", "importance", "uniform", True, "NAIR without the importance weights"),
        Variant("nair-neither", "importance", "uniform", False, "NAIR without penalty and weights"),
    )
}


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


@dataclass(frozen=True)
class SliceObjective:
    """What one fine-tuning minimises.

    Args:
        order: the slices (whose padded activations are scored).
        weights: w_j per slice.
        lam: weight of the normalised penalty (0 = none).
        fold_bn: rank and penalise the filter folded with its batch norm.
    """

    order: SliceOrder
    weights: tuple[float, ...]
    lam: float = 0.0
    fold_bn: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        if len(self.weights) != self.order.n_slices:
            raise ValueError(f"{len(self.weights)} weights for {self.order.n_slices} slices")
        if self.lam < 0 or not math.isfinite(self.lam):
            raise ValueError(f"penalty weight must be >= 0, got {self.lam}")

    @classmethod
    def plain(cls, channels: int) -> "SliceObjective":
        """Ordinary training: one slice holding every channel, weight 1, no penalty."""
        return cls(natural_order(channels, 1), (1.0,))


def make_objective(variant: Variant | str, head: nn.Module, channels: int, n_slices: int, *, w_non: float = 2.0,
                   lam: float = 1.0, fold_bn: bool = True) -> SliceObjective:
    """The objective of ``variant`` for a trained head (ranked now, before fine-tuning). For
    "whole" the objective scores the whole activation only (one slice); the variant is
    still evaluated on ``n_slices`` slices in channel order."""
    v = get_variant(variant) if isinstance(variant, str) else variant
    if v.weights is None:
        raise ValueError(f"variant {v.name!r} is not fine-tuned")
    if v.weights == "whole":
        return SliceObjective.plain(channels)
    if v.order == "importance":
        conv, bn = split_layer_filter(head, channels)
        with torch.no_grad():
            order = rank_channels(filter_importance(conv, bn, fold_bn=fold_bn), n_slices)
    else:
        order = natural_order(channels, n_slices)
    if v.weights == "importance":
        w = importance_weights(order.slice_importance(), w_non)
    elif v.weights == "progressive":
        w = progressive_weights(n_slices)
    else:
        w = np.ones(n_slices)
    return SliceObjective(order, tuple(w), lam if v.penalty else 0.0, fold_bn)


@dataclass
class EpochLog:
    """One epoch of :func:`train_slices`."""

    epoch: int
    lr: float
    loss: float
    penalty: float
    slice_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def train_slices(
    head: nn.Module,
    tail: nn.Module,
    channels: int,
    data: ArrayDataset,
    objective: SliceObjective,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    seed: int = 0,
    device: str | torch.device = "cpu",
    max_batches: int | None = None,
    on_epoch=None,
) -> list[EpochLog]:
    """SGD with cosine annealing of the learning rate (per step, to 0 at the end, as in the
    paper) on head and tail together, minimising ``objective``. Returns one log per epoch;
    ``on_epoch(log)`` is called after each."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"need epochs >= 1 and batch_size >= 1, got {epochs}, {batch_size}")
    device = torch.device(device)
    head.to(device).train()
    tail.to(device).train()
    params = [p for m in (head, tail) for p in m.parameters() if p.requires_grad]
    opt = SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    masks = torch.from_numpy(slice_masks(objective.order)).to(device)
    weights = torch.tensor(objective.weights, device=device)
    conv = bn = None
    p0 = 1.0
    if objective.lam > 0:
        conv, bn = split_layer_filter(head, channels)
        with torch.no_grad():
            p0 = float(penalty(filter_importance(conv, bn, fold_bn=objective.fold_bn), objective.order))
        if not p0 > 0:
            raise ValueError("the penalty is 0 at the start (no filter outside the first slice): nothing to push down")
    per_epoch = sum(1 for _ in batches(data, batch_size, shuffle=False, seed=0, max_batches=max_batches))
    total_steps, step = epochs * per_epoch, 0
    rng = PrivateRng(seed, uses_randomness(head) or uses_randomness(tail))  # dropout: the run's own stream
    logs = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        sums = np.zeros(objective.order.n_slices)
        loss_sum = pen_sum = 0.0
        n = 0
        for x, y in batches(data, batch_size, shuffle=True, seed=seed, epoch=epoch, max_batches=max_batches):
            step_lr = 0.5 * lr * (1.0 + math.cos(math.pi * step / total_steps))
            for g in opt.param_groups:
                g["lr"] = step_lr
            xb, yb = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            with rng:
                loss, per = slice_loss(tail, head(xb), yb, masks, weights)
            pen = torch.zeros((), device=device)
            if objective.lam > 0:
                pen = penalty(filter_importance(conv, bn, fold_bn=objective.fold_bn), objective.order) / p0
                loss = loss + objective.lam * pen
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at epoch {epoch} step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            k = len(y)
            sums += per.cpu().numpy() * k
            loss_sum += float(loss.detach()) * k
            pen_sum += float(pen.detach()) * k
            n += k
        log = EpochLog(epoch, lr, loss_sum / n, pen_sum / n, (sums / n).tolist(), time.perf_counter() - t0)
        logs.append(log)
        if on_epoch is not None:
            on_epoch(log)
    head.eval()
    tail.eval()
    return logs


@torch.no_grad()
def evaluate(head: nn.Module, tail: nn.Module, data: ArrayDataset, order: SliceOrder, *, batch_size: int = 256,
             device: str | torch.device = "cpu") -> np.ndarray:
    """Accuracy with the first k slices kept (zeros elsewhere), for k = 1..J: float (J,).
    In process (no codec); the deadline-bound evaluation sends real messages."""
    device = torch.device(device)
    head.to(device).eval()
    tail.to(device).eval()
    masks = torch.from_numpy(slice_masks(order)).to(device)
    correct = np.zeros(order.n_slices)
    for x, y in batches(data, batch_size, shuffle=False, seed=0):
        o = head(torch.from_numpy(x).to(device))
        pred = tail(padded_variants(o, masks)).argmax(1).reshape(order.n_slices, len(y)).cpu().numpy()
        correct += (pred == y[None, :]).sum(1)
    return correct / len(data)

