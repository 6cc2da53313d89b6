"""What raysplit's optimizers share: parameter groups, ``zero_grad`` and torch's state layout.

Why not ``torch.optim``'s classes: every ``torch.optim.Optimizer`` imports ``torch._dynamo``
the first time a parameter group is added (``add_param_group`` is wrapped in
``torch._disable_dynamo``). That pulls in sympy and about 900 modules, ~30-50 MiB of
private memory per process (``benchmarks/process_memory.py``), and every client actor is a
process of its own. torch's public functional updates (``torch.optim.sgd.sgd``,
``torch.optim.adam.adam``) do not import it in eager mode, so each optimizer here is that
update plus this small holder of groups and per-parameter state.

``state_dict`` / ``load_state_dict`` use ``torch.optim.Optimizer``'s layout (parameters
numbered in group order, per-parameter state dicts of tensors), so a checkpoint can be read
by either.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import torch


class FunctionalOptimizer(ABC):
    """Parameter groups and per-parameter state around a functional update.

    Subclasses set ``name`` (for messages), give their defaults to ``__init__``, check
    their hyper-parameters in ``check_options`` and implement ``step``.

    Args:
        params: tensors, or parameter groups (dicts with "params" and any of the options,
            which override the defaults for that group).
        defaults: the options of every group that does not set its own.
    """

    name = "optimizer"

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], defaults: dict[str, Any]) -> None:
        self.defaults = dict(defaults)
        groups = list(params)
        if not groups:
            raise ValueError(f"{self.name} got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        seen: set[int] = set()
        for g in groups:
            group = {**self.defaults, **g, "params": list(g["params"])}
            self._check_group(group)
            for p in group["params"]:
                if id(p) in seen:
                    raise ValueError("a parameter appears in more than one parameter group")
                seen.add(id(p))
            self.param_groups.append(group)

    # -- for subclasses ---------------------------------------------------------
    def check_options(self, g: dict[str, Any]) -> None:
        """Raise ValueError naming a bad hyper-parameter of group ``g``."""

    @abstractmethod
    def step(self) -> None:
        """Apply one update to every parameter from its ``.grad``."""

    def _check_group(self, g: dict[str, Any]) -> None:
        self.check_options(g)
        for p in g["params"]:
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"{self.name} params must be tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"{self.name} can only optimize leaf tensors")

    def _check_number(self, g: dict[str, Any], key: str, below: float = float("inf")) -> None:
        v = g[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < below:
            limit = "a finite number >= 0" if below == float("inf") else f"a number in [0, {below:g})"
            raise ValueError(f"{self.name} {key}={v!r}; allowed: {limit}")

    # -- common -----------------------------------------------------------------
    def with_grads(self):
        """(group, its parameters that have a gradient) for every group with any: what a step updates."""
        for g in self.param_groups:
            params = [p for p in g["params"] if p.grad is not None]
            if params:
                yield g, params

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    def state_dict(self) -> dict[str, Any]:
        """{"state": {index: {name: tensor}}, "param_groups": [...]}, the layout of
        ``torch.optim.Optimizer.state_dict`` (parameters numbered in group order)."""
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
        """Restore hyper-parameters and per-parameter state saved by :meth:`state_dict`
        (or by the torch optimizer of the same kind)."""
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
            g = {**own, **{k: v for k, v in saved.items() if k != "params" and k in own}}
            self._check_group(g)
            new_groups.append(g)
        state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        for i, s in state_dict["state"].items():
            p = by_index.get(int(i))
            if p is None:
                raise ValueError(f"state for parameter {i}, which no group holds")
            state[p] = {k: self._restore(k, int(i), v, p) for k, v in s.items()}
        self.param_groups = new_groups
        self.state = state

    @staticmethod
    def _restore(key: str, i: int, value: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        if key == "step":  # a scalar counter: torch keeps it on the CPU as float32
            return torch.as_tensor(value, dtype=torch.float32).detach().clone().cpu().reshape(())
        if value.shape != p.shape:
            raise ValueError(f"{key} {i} has shape {tuple(value.shape)}, the parameter {tuple(p.shape)}")
        return value.to(device=p.device, dtype=p.dtype).clone()
