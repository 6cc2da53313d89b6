"""SGD with momentum and weight decay: ``torch.optim.SGD``'s update without its class.

Why not ``torch.optim.SGD`` itself: every ``torch.optim.Optimizer`` imports
``torch._dynamo`` the first time a parameter group is added (``add_param_group`` is
wrapped in ``torch._disable_dynamo``). That pulls in sympy and about 900 modules, ~50 MiB
of private memory per process (``benchmarks/process_memory.py``), and every client actor
is a process of its own.

The update is torch's public functional ``torch.optim.sgd.sgd``: only its compile-time
fallback would import dynamo, and it never runs in eager mode, so the arithmetic is
torch's own (bit-identical to ``torch.optim.SGD``, ``tests/test_sgd.py``) while this class
only holds the parameter groups and the momentum buffers. ``state_dict`` /
``load_state_dict`` use ``torch.optim.Optimizer``'s layout (parameters numbered in group
order), so a checkpoint can be read by either.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.sgd import sgd as functional_sgd


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
        """One update of every parameter that has a gradient (torch's SGD update)."""
        for g in self.param_groups:
            params = [p for p in g["params"] if p.grad is not None]
            if not params:
                continue
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

    # -- state ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """{"state": {index: {"momentum_buffer": tensor}}, "param_groups": [...]}, the
        layout of ``torch.optim.Optimizer.state_dict`` (parameters numbered in group order)."""
        index: dict[int, int] = {}
        groups = []
        for g in self.param_groups:
            ids = []
            for p in g["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": ids})
        state = {
            index[id(p)]: {k: v.clone() for k, v in s.items()}
            for g in self.param_groups
            for p in g["params"]
            if (s := self.state.get(p))
        }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyper-parameters and momentum buffers saved by :meth:`state_dict`."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state has {len(groups)} parameter groups, this optimizer {len(self.param_groups)}")
        by_index: dict[int, torch.Tensor] = {}
        for saved, own in zip(groups, self.param_groups):
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(
                    f"a parameter group holds {len(saved['params'])} parameters in the state, "
                    f"{len(own['params'])} here"
                )
            by_index.update(zip(saved["params"], own["params"]))
        new_groups = []
        for saved, own in zip(groups, self.param_groups):
            g = {**own, **{k: v for k, v in saved.items() if k != "params"}}
            _check_group(g)
            new_groups.append(g)
        state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        for i, s in state_dict["state"].items():
            p = by_index.get(int(i))
            if p is None:
                raise ValueError(f"state for parameter {i}, which no group holds")
            buf = s["momentum_buffer"]
            if buf.shape != p.shape:
                raise ValueError(f"momentum buffer {i} has shape {tuple(buf.shape)}, the parameter {tuple(p.shape)}")
            state[p] = {"momentum_buffer": buf.to(device=p.device, dtype=p.dtype).clone()}
        self.param_groups = new_groups
        self.state = state


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
