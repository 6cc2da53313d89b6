"""What is served: a trained split model from a run directory, and the budgets it takes.

A request's budget is one of three kinds, fixed by the model:

* ``slices`` (a NAIR model, ``jobs/nair.py``): the channels travel in importance order,
  J slices of them; the budget is how many slices the server receives (the client sends
  the whole channel-major message and the link or the client cuts it);
* ``channels`` (the compression module: ``--method prune|deprune|fixed``): B, the
  channels the top-B selection sends. A prune run holds one model per budget (each
  budget's own head and tail), so its budgets are those; any other run's one model takes
  any B from 1 to C;
* ``cut`` (a model without the module, ``--method none``): the layer after which the
  client stops; the server runs the rest. Both halves are cut from the same trained
  layers (``recut``), so every cut computes the same function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from raysplit.inference import SplitModel, load_model
from raysplit.models.cuts import cut_model

__all__ = ["KINDS", "Served", "load_served", "recut"]

KINDS = ("slices", "channels", "cut")


@dataclass
class Served:
    """A model ready to serve.

    Attributes:
        source: the file or run directory it came from.
        kind: "slices", "channels" or "cut" (module docstring).
        models: {budget: model} for a prune run (one per budget), else {0: the model}.
        cuts: for "cut": the split points a request may name (0 = the raw input).
    """

    source: str
    kind: str
    models: dict[int, SplitModel]
    cuts: tuple[int, ...] = ()
    _recuts: dict[int, tuple[nn.Module, nn.Module]] = field(default_factory=dict, repr=False)

    @property
    def model(self) -> SplitModel:
        """The model (the largest budget's for a prune run)."""
        return self.models[max(self.models)]

    @property
    def per_budget(self) -> bool:
        return self.kind == "channels" and 0 not in self.models

    def budgets(self) -> tuple[int, ...]:
        """Every budget a request may carry."""
        if self.kind == "slices":
            return tuple(range(1, self.model.slices.n_slices + 1))
        if self.kind == "cut":
            return self.cuts
        if self.per_budget:
            return tuple(sorted(self.models))
        return tuple(range(1, self.model.client.channels + 1))

    def check_budget(self, budget: int) -> int:
        allowed = self.budgets()
        if budget not in allowed:
            lo, hi = min(allowed), max(allowed)
            listed = ", ".join(map(str, allowed)) if len(allowed) <= 12 else f"{lo}..{hi}"
            raise ValueError(f"budget {budget} ({self.kind}) not served by {self.source}; allowed: {listed}")
        return int(budget)

    def halves(self, cut: int) -> tuple[nn.Module, nn.Module]:
        """(head, tail) of a "cut" model cut after layer ``cut`` (built once, then kept)."""
        if self.kind != "cut":
            raise ValueError(f"{self.source} serves {self.kind} budgets, not cut layers")
        self.check_budget(cut)
        if cut not in self._recuts:
            self._recuts[cut] = recut(self.model, cut)
        return self._recuts[cut]


def recut(model: SplitModel, cut: int) -> tuple[nn.Sequential, nn.Sequential]:
    """The trained layers of a model without the compression module, cut after ``cut``
    instead of its own split layer: (head, tail), in eval mode."""
    if model.client.compressor is not None:
        raise ValueError("a model with the compression module has one cut: its split layer")
    s = model.split
    full = nn.Sequential(*model.client.head, *model.server.tail)
    cm = cut_model(s.model, cut, s.input_shape, s.num_classes)
    n = len(full)
    if len(cm.head) + len(cm.tail) != n:
        raise ValueError(f"cannot recut: {s.model} has {len(cm.head) + len(cm.tail)} layers, the file {n}")
    head, tail = nn.Sequential(*list(full)[:cut]), nn.Sequential(*list(full)[cut:])
    return head.eval(), tail.eval()


def _model_files(path: Path) -> list[Path]:
    d = path / "models" if (path / "models").is_dir() else path
    return sorted(d.glob("*.pt"))


def load_served(source: str | Path, *, variant: str | None = None, device: str = "cpu") -> Served:
    """The model to serve from a model file or a run directory.

    A run directory of ``jobs/nair.py`` serves ``models/nair.pt`` (or ``models/<variant>.pt``);
    a ``--method prune`` run serves every ``models/budget_<B>.pt``; any other run its final
    model (trained with ``--save-model``). ``variant`` picks a file by name (``nair``, ``clio``, ``budget_128``, ...)."""
    path = Path(source)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = _model_files(path)
        if not files:
            raise FileNotFoundError(f"no model files (*.pt) in {path} or {path / 'models'}: train a run first "
                                    "(--method prune saves one per budget; any other method with --save-model)")
        names = {f.stem: f for f in files}
        if variant is not None:
            if variant not in names:
                raise ValueError(f"no model {variant!r} in {path}; it has {', '.join(sorted(names))}")
            files = [names[variant]]
        elif "nair" in names:
            files = [names["nair"]]
        elif not all(n.startswith("budget_") for n in names):
            raise ValueError(f"{path} holds several models ({', '.join(sorted(names))}); choose one with variant=")
    else:
        raise FileNotFoundError(f"no model file or run directory at {path}")
    models = [load_model(f, device=device) for f in files]
    first = models[0]
    if first.slices is not None:
        return Served(str(source), "slices", {0: first})
    if first.client.compressor is None:
        n_layers = len(first.client.head) + len(first.server.tail)
        return Served(str(source), "cut", {0: first}, tuple(range(0, n_layers)))
    if len(models) > 1 or first.method == "prune":
        methods = {m.method for m in models}
        if methods != {"prune"} and len(models) > 1:
            raise ValueError(f"{path} holds models of methods {sorted(methods)}; a prune run has one per budget")
        return Served(str(source), "channels", {m.budget: m for m in models})
    return Served(str(source), "channels", {0: first})

