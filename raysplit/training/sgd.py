"""SGD with momentum and weight decay: the same update as ``torch.optim.SGD``.

Why not ``torch.optim.SGD``: every ``torch.optim`` optimizer imports ``torch._dynamo``
the first time a parameter group is added (``add_param_group`` is wrapped in
``torch._disable_dynamo``). That pulls in sympy, triton and about 900 modules, ~0.9 s
and ~50 MiB of private memory per process (``benchmarks/process_memory.py``), and every
client actor is a process of its own: 32 clients paid it 32 times for an optimizer that
is five lines of arithmetic. The update below is torch's single-tensor path (the one it takes
for CPU tensors), operation for operation, so results are bit-identical
(``tests/test_sgd.py`` checks that against ``torch.optim.SGD``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class SGD:
    """Args:
    params: tensors, or parameter groups (dicts with "params" and any of the options
        below, which override the defaults for that group).
    lr: learning rate (>= 0).
    momentum: momentum factor (>= 0).
    weight_decay: L2 penalty added to the gradient (>= 0).
    dampening: dampening for momentum (>= 0).
    nesterov: Nesterov momentum (needs momentum > 0 and dampening 0).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        self.defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "dampening": dampening,
            "nesterov": nesterov,
        }
        groups = list(params)
        if not groups:
            raise ValueError("SGD got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        seen: set[int] = set()
        for g in groups:
            group = {**self.defaults, **g, "params": list(g["params"])}
            _check_group(group)
            for p in group["params"]:
                if id(p) in seen:
                    raise ValueError("a parameter appears in more than one parameter group")
                seen.add(id(p))
            self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient (torch's order of operations)."""
        for g in self.param_groups:
            lr, mom, wd, damp, nest = g["lr"], g["momentum"], g["weight_decay"], g["dampening"], g["nesterov"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                if wd != 0:
                    d_p = d_p.add(p, alpha=wd)
                if mom != 0:
                    st = self.state.setdefault(p, {})
                    buf = st.get("momentum_buffer")
                    if buf is None:
                        buf = torch.clone(d_p).detach()
                        st["momentum_buffer"] = buf
                    else:
                        buf.mul_(mom).add_(d_p, alpha=1 - damp)
                    d_p = d_p.add(buf, alpha=mom) if nest else buf
                p.add_(d_p, alpha=-lr)


def _check_group(g: dict[str, Any]) -> None:
    for key in ("lr", "momentum", "weight_decay", "dampening"):
        v = g[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf"):
            raise ValueError(f"SGD {key}={v!r}; allowed: a finite number >= 0")
    if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
        raise ValueError(
            f"SGD nesterov needs momentum > 0 and dampening 0; got momentum={g['momentum']}, "
            f"dampening={g['dampening']}"
        )
    for p in g["params"]:
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"SGD params must be tensors, got {type(p).__name__}")
        if not p.is_leaf:
            raise ValueError("SGD can only optimize leaf tensors")
