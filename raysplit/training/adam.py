"""Adam (Kingma & Ba, 2015): ``torch.optim.Adam``'s update without its class.

BottleFit's first stage trains the encoder and decoder with Adam (lr 1e-3). The update is
torch's public functional ``torch.optim.adam.adam`` (bit-identical to ``torch.optim.Adam``,
``tests/test_adam.py``); creating a ``torch.optim.Adam`` would import torch._dynamo in
every process that trains (``raysplit.training.optim_base`` says why that matters).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.adam import adam as functional_adam

from raysplit.training.optim_base import FunctionalOptimizer


class Adam(FunctionalOptimizer):
    """Args:
    params: tensors, or parameter groups (dicts with "params" and any of the options
        below, which override the defaults for that group).
    lr: learning rate (>= 0).
    betas: decay rates of the first and second moment estimates, each in [0, 1).
    eps: added to the denominator (>= 0).
    weight_decay: L2 penalty added to the gradient (>= 0; torch's Adam, not AdamW).
    amsgrad: keep the maximum of the second moments (Reddi et al.).
    """

    name = "Adam"

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                                  "amsgrad": bool(amsgrad)})

    def check_options(self, g: dict[str, Any]) -> None:
        for key in ("lr", "eps", "weight_decay"):
            self._check_number(g, key)
        betas = g["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"Adam betas={betas!r}; allowed: two numbers in [0, 1)")
        g["betas"] = tuple(betas)
        for i, b in enumerate(betas):
            self._check_number({f"betas[{i}]": b}, f"betas[{i}]", below=1.0)

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient (torch's Adam update)."""
        for g, params in self.with_grads():
            states = []
            for p in params:
                s = self.state.get(p)
                if not s:  # lazily, as torch does: step on the CPU, moments like the parameter
                    s = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p),
                         "exp_avg_sq": torch.zeros_like(p)}
                    if g["amsgrad"]:
                        s["max_exp_avg_sq"] = torch.zeros_like(p)
                    self.state[p] = s
                states.append(s)
            beta1, beta2 = g["betas"]
            functional_adam(
                params,
                [p.grad for p in params],
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [s["max_exp_avg_sq"] for s in states] if g["amsgrad"] else [],
                [s["step"] for s in states],
                amsgrad=g["amsgrad"],
                beta1=beta1,
                beta2=beta2,
                lr=g["lr"],
                weight_decay=g["weight_decay"],
                eps=g["eps"],
                maximize=False,
            )
