"""Importance-ordered slices of a split activation (NAIR, Xiao et al., §IV).

NAIR sends the channels of the split activation O_k in order of importance, cut into J
transmission slices; the receiver puts whatever arrived back at its channels, fills the
rest with zeros and runs one tail. This module is the math, as pure functions:

* eq. 8, :func:`filter_importance`: a channel's importance R is the L1 norm of the filter
  that produces it (Li et al., "Pruning filters for efficient ConvNets").
* eq. 9-10, :func:`rank_channels`: sort the channels by R (descending), record the index
  vector I_k, and cut it into J slices (:class:`SliceOrder`).
* eq. 11, :func:`importance_weights`: w_j = (1 - R^v_j / R^v_J)^w_non for j < J, w_J = 1,
  where R^v_j is the importance of slices 1..j together (Alg. 2, lines 3-10).
* eq. 12, :func:`penalty`: P = sum over slices 2..J of their importance: the L1 norm of
  every filter outside the first slice, pushed down during fine-tuning.
* eq. 13-14, :func:`slice_loss`: sum_j w_j L_j + lambda P, L_j the task loss of the tail on
  the activation with only slices 1..j kept (zeros elsewhere).

Decisions where the paper is silent or unclear (written down in the README too):

* **Which filter.** The split activation's channels come from the last convolution of the
  head with that many output channels; when a batch norm follows it (VGG, MobileNetV2),
  the channel's filter is the convolution folded with the norm, w * gamma / sqrt(var +
  eps): with batch norm the kernel's own scale is meaningless (the norm divides it out),
  while the folded filter is exactly what the channel applies at inference.
  ``fold_bn=False`` ranks the raw kernel, as in Li et al.
* **Ranking unit.** Channels are ranked one by one and then cut into J slices (the first
  ``C % J`` one channel larger); the paper ranked pairs of channels to shorten training,
  which the slice count J controls here.
* **The penalty's scale.** Eq. 13 adds P with no coefficient, but P is a sum of filter norms
  whose scale depends on the layer; it enters as ``lam * P / P0`` with P0 its value at the
  start of fine-tuning (a constant), so lam = 1 starts it at the size of one loss term
  and its gradient is eq. 12's up to that constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from raysplit.codec import split_channels

__all__ = [
    "SliceOrder",
    "split_layer_filter",
    "filter_importance",
    "rank_channels",
    "natural_order",
    "importance_weights",
    "progressive_weights",
    "penalty",
    "slice_masks",
    "padded_variants",
    "slice_loss",
    "encode_slices",
    "truncate_slices",
    "slice_message",
]


@dataclass(frozen=True)
class SliceOrder:
    """The order channels travel in and how it is cut into slices.

    Args:
        order: channel indices, most important first (the index vector I_k of eq. 10).
        counts: channels per slice, in sending order (summing to len(order)).
        importance: R of every channel, by channel index (eq. 8), when it was ranked.
    """

    order: tuple[int, ...]
    counts: tuple[int, ...]
    importance: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "order", tuple(int(c) for c in self.order))
        object.__setattr__(self, "counts", tuple(int(k) for k in self.counts))
        object.__setattr__(self, "importance", tuple(float(r) for r in self.importance))
        c = len(self.order)
        if sorted(self.order) != list(range(c)):
            raise ValueError(f"order must be a permutation of 0..{c - 1}, got {list(self.order)[:8]}...")
        if not self.counts or min(self.counts) < 1 or sum(self.counts) != c:
            raise ValueError(f"slice counts {list(self.counts)} must be positive and sum to the {c} channels")
        if self.importance and len(self.importance) != c:
            raise ValueError(f"importance has {len(self.importance)} entries for {c} channels")

    @property
    def channels(self) -> int:
        return len(self.order)

    @property
    def n_slices(self) -> int:
        return len(self.counts)

    def prefix(self, k: int) -> np.ndarray:
        """int64: the channels of the first ``k`` slices, in sending order."""
        if not 0 <= k <= self.n_slices:
            raise ValueError(f"slices {k} out of range; allowed: 0..{self.n_slices}")
        return np.asarray(self.order[: sum(self.counts[:k])], dtype=np.int64)

    def slice_importance(self) -> np.ndarray:
        """R of each slice (the sum over its channels), in sending order."""
        if not self.importance:
            raise ValueError("this SliceOrder carries no importance values")
        r = np.asarray(self.importance, dtype=np.float64)[list(self.order)]
        bounds = np.cumsum((0,) + self.counts)
        return np.array([r[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:])])

    def to_dict(self) -> dict:
        return {"order": list(self.order), "counts": list(self.counts), "importance": list(self.importance)}

    @classmethod
    def from_dict(cls, d: dict) -> "SliceOrder":
        return cls(tuple(d["order"]), tuple(d["counts"]), tuple(d.get("importance", ())))


def split_layer_filter(head: nn.Module, channels: int) -> tuple[nn.Conv2d, nn.BatchNorm2d | None]:
    """The convolution that produces the split activation's ``channels`` channels (the last
    one in the head with that many outputs) and the batch norm right after it, if any."""
    conv, bn, after = None, None, False
    for m in head.modules():
        if isinstance(m, nn.Conv2d) and m.out_channels == channels and m.groups == 1:
            conv, bn, after = m, None, True
        elif after and isinstance(m, nn.BatchNorm2d):
            bn = m if m.num_features == channels else None
            after = False
        elif after and isinstance(m, (nn.Conv2d, nn.Linear)):
            after = False
    if conv is None:
        raise ValueError(
            f"NAIR ranks the filters that produce the split activation, but the head has no convolution with "
            f"{channels} output channels (split after a convolutional layer, not at the raw input)"
        )
    return conv, bn


def filter_importance(conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, *, fold_bn: bool = True) -> torch.Tensor:
    """Eq. 8: R_c = ||F_c||_1 per output channel c (differentiable, float32 (C,)).

    With ``bn`` and ``fold_bn`` the filter is the convolution folded with the norm's
    inference-time scale gamma / sqrt(running_var + eps) (running statistics are buffers,
    so the gradient reaches the kernel and gamma)."""
    r = conv.weight.abs().flatten(1).sum(1)
    if bn is not None and fold_bn:
        gamma = bn.weight if bn.affine else torch.ones_like(r)
        r = r * gamma.abs() / torch.sqrt(bn.running_var + bn.eps)
    return r


def rank_channels(importance: torch.Tensor | np.ndarray, n_slices: int) -> SliceOrder:
    """Eq. 9-10: channels sorted by importance, most important first (ties to the lower
    index), cut into ``n_slices`` slices."""
    r = np.asarray(importance.detach().cpu() if isinstance(importance, torch.Tensor) else importance, np.float64)
    if r.ndim != 1 or not len(r):
        raise ValueError(f"importance must be a non-empty vector, got shape {r.shape}")
    if not 1 <= n_slices <= len(r):
        raise ValueError(f"slices {n_slices} out of range; allowed: 1..{len(r)} (the channels at the split)")
    order = np.argsort(-r, kind="stable")
    return SliceOrder(tuple(order.tolist()), split_channels(len(r), n_slices), tuple(r.tolist()))


def natural_order(channels: int, n_slices: int) -> SliceOrder:
    """Channels in index order (the original split and CLIO, which trains the first
    channels to matter most), cut into ``n_slices`` slices."""
    if not 1 <= n_slices <= channels:
        raise ValueError(f"slices {n_slices} out of range; allowed: 1..{channels} (the channels at the split)")
    return SliceOrder(tuple(range(channels)), split_channels(channels, n_slices))


def importance_weights(slice_importance: np.ndarray, w_non: float = 2.0) -> np.ndarray:
    """Eq. 11 (Alg. 2, lines 3-10): w_j = (1 - R^v_j / R^v_J)^w_non for j < J, w_J = 1, where
    R^v_j = R_1 + ... + R_j is the importance of the first j slices together."""
    r = np.asarray(slice_importance, dtype=np.float64)
    if r.ndim != 1 or not len(r) or (r < 0).any() or not np.isfinite(r).all():
        raise ValueError(f"slice importance must be a non-empty vector of finite values >= 0, got {r}")
    if w_non < 0:
        raise ValueError(f"w_non must be >= 0, got {w_non}")
    cum = np.cumsum(r)
    if cum[-1] <= 0:
        raise ValueError("every slice has importance 0: nothing to weight")
    w = (1.0 - cum / cum[-1]) ** w_non
    w[-1] = 1.0
    return w


def progressive_weights(n_slices: int) -> np.ndarray:
    """CLIO's per-slice weights rho_j, the probability that the link carries slices 1..j in
    time, for a bandwidth uniform between nothing and enough for all of them:
    rho_j = 1 - (j - 1) / J (1 for the first slice, 1/J for the whole activation)."""
    if n_slices < 1:
        raise ValueError(f"slices must be >= 1, got {n_slices}")
    return 1.0 - np.arange(n_slices) / n_slices


def penalty(importance: torch.Tensor, order: SliceOrder) -> torch.Tensor:
    """Eq. 12: P = sum of R over every channel outside the first slice (slices 2..J)."""
    rest = order.prefix(order.n_slices)[order.counts[0]:]
    return importance[torch.from_numpy(rest).to(importance.device)].sum()


def slice_masks(order: SliceOrder) -> np.ndarray:
    """bool (J, C): row j keeps the channels of slices 1..j+1 (the padded slice O^{1:j})."""
    masks = np.zeros((order.n_slices, order.channels), dtype=bool)
    for j in range(order.n_slices):
        masks[j, order.prefix(j + 1)] = True
    return masks


def padded_variants(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(J*N, C, ...) from x (N, C, ...): variant j keeps the channels of mask j, zeros elsewhere
    (what a receiver of slices 1..j feeds the tail), variants stacked along the batch."""
    shape = (masks.shape[0], 1, masks.shape[1]) + (1,) * (x.dim() - 2)
    return (x.unsqueeze(0) * masks.reshape(shape).to(x.dtype)).flatten(0, 1)


def slice_loss(
    tail: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    weights: torch.Tensor,
    loss_fn=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 13-14 without the penalty: (sum_j w_j L_j, the L_j), L_j the mean task loss of
    the tail on the activation padded to slices 1..j. One tail pass over the J variants
    stacked along the batch, so batch norm in the tail sees every padding level at once,
    as it will in inference."""
    j, n = masks.shape[0], x.shape[0]
    logits = tail(padded_variants(x, masks))
    loss_fn = loss_fn or nn.functional.cross_entropy
    per = loss_fn(logits, labels.repeat(j), reduction="none").reshape(j, n).mean(1)
    return (weights.to(per.dtype) * per).sum(), per.detach()


def encode_slices(activation: np.ndarray, order: SliceOrder, config, *, step: int = 0, client_id: int = 0,
                  tenant: int = 0, cut: int = 0, key: bytes | None = None) -> bytes:
    """The channel-major message of an activation (N, C, ...) in NAIR's order: channels in
    ``order``, one codec slice per NAIR slice, so every prefix that ends on a slice is the
    message of fewer slices (``codec.slice_ends`` gives where)."""
    from raysplit import codec

    if activation.shape[1] != order.channels:
        raise ValueError(f"slice order has {order.channels} channels, the activation {activation.shape[1]}")
    idx = np.asarray(order.order, dtype=np.int64)
    return codec.encode(np.take(activation, idx, axis=1), idx, activation.shape, config, kind=codec.KIND_ACTIVATION,
                        step=step, client_id=client_id, tenant=tenant, cut=cut, layout="channel",
                        slices=order.counts, key=key)


def truncate_slices(buf: bytes, slices: int) -> bytes:
    """The prefix of a channel-major message that holds its first ``slices`` slices."""
    from raysplit import codec

    ends = codec.slice_ends(buf)
    if not 0 <= slices < len(ends):
        raise ValueError(f"slices {slices} out of range; allowed: 0..{len(ends) - 1}")
    return buf[: ends[slices]]


@torch.no_grad()
def slice_message(client, x: np.ndarray, order: SliceOrder, slices: int | None = None, *, step: int = 0,
                  key: bytes | None = None) -> bytes:
    """A client's inference message for ``x`` in NAIR's order (:func:`encode_slices` of its
    head's activation), keeping only the first ``slices`` slices (None: all). ``client``
    is a :class:`~raysplit.training.client.SplitClient` without the compression module."""
    if client.compressor is not None:
        raise ValueError("NAIR slices are cut from the head's own activation; this client has a compression module")
    if order.channels != client.channels:
        raise ValueError(f"slice order has {order.channels} channels, the head gives {client.channels}")
    client.modules.eval()
    o = client.head(torch.from_numpy(np.require(x, np.float32, ["C"]))).numpy()
    buf = encode_slices(o, order, client.codec, step=step, client_id=client.client_id, tenant=client.tenant_key,
                        cut=client.cfg.split_layer, key=key)
    return buf if slices is None else truncate_slices(buf, slices)
