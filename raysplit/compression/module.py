"""The compression-decompression module of Prune-Deprune (paper §3.1, Fig. 3).

Client side (:class:`Compressor`), after layer n with φ̃ channels::

    l_n --conv(k=2+r, s=r, p=r)--> BN --> l̂_c (φ channels) --mul f--> l_c --top-B--> wire

Server side (:class:`Decompressor`)::

    wire --scatter to the B indices (zeros elsewhere)--> convT(k=2+r, s=r, p=r) --> ReLU --> l_d

The mask. The paper writes f = sigmoid(f̂); the authors' public code uses
f = sigmoid(f̂)² and initialises f̂ = 15·U(0, 1). Both are offered (``mask="sigmoid2"``
is the default, as in the code); sigmoid² makes "off" reachable faster because the
square pushes small values further down.

Top-B. Only the B channels with the largest f are sent. B can change between any two
steps: it is an argument of ``forward``, not a buffer of the module.
"""

from __future__ import annotations

import math

import torch
from torch import nn

MASKS = ("sigmoid", "sigmoid2")


def mask_from_logits(f_hat: torch.Tensor, mask: str) -> torch.Tensor:
    """f from f̂: sigmoid (the paper) or sigmoid squared (the authors' code)."""
    s = torch.sigmoid(f_hat)
    if mask == "sigmoid":
        return s
    if mask == "sigmoid2":
        return s * s
    raise ValueError(f"unknown mask {mask!r}; choose one of {MASKS}")


def top_b_indices(f: torch.Tensor, budget: int) -> torch.Tensor:
    """Indices of the ``budget`` largest entries of f, largest first.

    Ties are broken by the lower index (a stable sort), so the choice is deterministic and
    the order is the importance order a receiver can slice a prefix from.
    """
    if not 1 <= budget <= f.numel():
        raise ValueError(f"budget {budget} out of range: allowed 1..{f.numel()}")
    order = torch.sort(f.detach(), descending=True, stable=True).indices
    return order[:budget]


def _check_resolution(r: int) -> None:
    if not isinstance(r, int) or r < 1:
        raise ValueError(f"resolution factor r must be an integer >= 1, got {r!r}")


class Compressor(nn.Module):
    """Client half: resolution conv, batch norm, learnable channel filter, top-B.

    Args:
        in_channels: φ̃, channels of l_n.
        channels: φ, channels after the compression conv (default φ̃).
        resolution: r; kernel 2+r, stride r, padding r (r=1 keeps the size with 3x3/1/1).
        mask: "sigmoid" or "sigmoid2" (see module docstring).
        init_scale: f̂ initialised as init_scale·U(0,1) (the authors use 15).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int | None = None,
        resolution: int = 1,
        mask: str = "sigmoid2",
        init_scale: float = 15.0,
    ) -> None:
        super().__init__()
        _check_resolution(resolution)
        if mask not in MASKS:
            raise ValueError(f"unknown mask {mask!r}; choose one of {MASKS}")
        channels = in_channels if channels is None else channels
        if not 1 <= channels:
            raise ValueError(f"compressed channels must be >= 1, got {channels}")
        self.channels = channels
        self.mask = mask
        self.init_scale = float(init_scale)
        self.conv = nn.Conv2d(in_channels, channels, kernel_size=2 + resolution, stride=resolution, padding=resolution)
        self.bn = nn.BatchNorm2d(channels)
        self.f_hat = nn.Parameter(torch.rand(channels) * self.init_scale)

    def filter(self) -> torch.Tensor:
        """f, one entry per channel, in (0, 1)."""
        return mask_from_logits(self.f_hat, self.mask)

    def forward(self, l_n: torch.Tensor, budget: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (selected, indices): l_c restricted to the top-B channels, (N, B, H', W').

        At the full budget every channel is sent in its natural order and ``indices`` is
        None (the wire then carries no index list).
        """
        f = self.filter()
        l_c = self.bn(self.conv(l_n)) * f.view(1, -1, 1, 1)
        if budget == self.channels:
            return l_c, None
        idx = top_b_indices(f, budget)
        return l_c.index_select(1, idx), idx

    @torch.no_grad()
    def reset_filter(self, which: str, budget: int, generator: torch.Generator | None = None) -> int:
        """Re-randomise filter entries at a budget transition (paper §3.3).

        ``which="prune"`` (resetPrune, before moving to a *smaller* budget): the entries
        currently selected are redrawn from the initial distribution, so that channels
        that were "on" can be trained towards zero again.
        ``which="deprune"`` (resetdePrune, before a *larger* budget): the entries *not*
        selected are redrawn, so pruned channels can come back.
        ``budget`` is the budget being left. Returns how many entries were redrawn.
        """
        idx = top_b_indices(self.filter(), min(budget, self.channels))
        chosen = torch.zeros(self.channels, dtype=torch.bool)
        chosen[idx] = True
        if which == "prune":
            target = chosen
        elif which == "deprune":
            target = ~chosen
        else:
            raise ValueError(f"unknown reset {which!r}; choose 'prune' or 'deprune'")
        n = int(target.sum())
        fresh = torch.rand(n, generator=generator) * self.init_scale
        self.f_hat[target] = fresh.to(self.f_hat.dtype)
        return n


class Decompressor(nn.Module):
    """Server half: scatter the B received channels back, restore shape with convT + ReLU.

    Args:
        channels: φ, channels on the wire (before selection).
        out_channels: φ̃, channels the tail expects.
        out_size: (H, W) of l_n, so odd sizes are restored exactly.
        resolution: r, as on the client.
    """

    def __init__(self, channels: int, out_channels: int, out_size: tuple[int, int], resolution: int = 1) -> None:
        super().__init__()
        _check_resolution(resolution)
        self.channels = channels
        self.out_size = tuple(out_size)
        self.deconv = nn.ConvTranspose2d(
            channels, out_channels, kernel_size=2 + resolution, stride=resolution, padding=resolution
        )
        self.act = nn.ReLU(inplace=True)

    def scatter(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Put (N, B, H', W') back at channel ``indices`` of an (N, φ, H', W') zero tensor."""
        n, _, h, w = values.shape
        dense = values.new_zeros(n, self.channels, h, w)
        return dense.index_copy(1, indices, values)

    def forward(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        dense = self.scatter(values, indices)
        return self.act(self.deconv(dense, output_size=list(self.out_size)))


def compressed_size(size: tuple[int, int], resolution: int) -> tuple[int, int]:
    """Spatial size after the compression conv (k=2+r, s=r, p=r)."""
    _check_resolution(resolution)
    k, s, p = 2 + resolution, resolution, resolution
    return tuple(math.floor((d + 2 * p - k) / s) + 1 for d in size)  # type: ignore[return-value]
