"""SGD with momentum and weight decay: ``torch.optim.SGD``'s update without its class.

The update is torch's public functional ``torch.optim.sgd.sgd``: only its compile-time
fallback would import dynamo, and it never runs in eager mode, so the arithmetic is
torch's own (bit-identical to ``torch.optim.SGD``, ``tests/test_sgd.py``) while this class
only holds the parameter groups and the momentum buffers (why not ``torch.optim.SGD``
itself, and the state layout: ``raysplit.training.optim_base``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.sgd import sgd as functional_sgd

from raysplit.training.optim_base import FunctionalOptimizer


class SGD(FunctionalOptimizer):
    """Args:
    params: tensors, or parameter groups (dicts with "params" and any of the options
        below, which override the defaults for that group).
    lr: learning rate (>= 0).
    momentum: momentum factor (>= 0).
    weight_decay: L2 penalty added to the gradient (>= 0).
    dampening: dampening for momentum (>= 0).
    nesterov: Nesterov momentum (needs momentum > 0 and dampening 0).
    """

    name = "SGD"

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "dampening": dampening, "nesterov": nesterov})

    def check_options(self, g: dict[str, Any]) -> None:
        for key in ("lr", "momentum", "weight_decay", "dampening"):
            self._check_number(g, key)
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ValueError(
                f"SGD nesterov needs momentum > 0 and dampening 0; got momentum={g['momentum']}, "
                f"dampening={g['dampening']}"
            )

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient (torch's SGD update)."""
        for g, params in self.with_grads():
            bufs = [self.state.get(p, {}).get("momentum_buffer") for p in params]
            functional_sgd(
                params,
                [p.grad for p in params],
                bufs,
                weight_decay=g["weight_decay"],
                momentum=g["momentum"],
                lr=g["lr"],
                dampening=g["dampening"],
                nesterov=g["nesterov"],
                maximize=False,
            )
            if g["momentum"] != 0:
                for p, buf in zip(params, bufs):
                    self.state.setdefault(p, {})["momentum_buffer"] = buf
