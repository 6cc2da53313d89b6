"""The optimizers a training stage can ask for, by name (``Stage.optimizer``).

Both are torch's functional updates in small classes (``optim_base`` says why not
``torch.optim``). A stage that names another optimizer than the one running starts a
fresh one (BottleFit: Adam in stage 1, then a new SGD in stage 2); a stage with the same
one keeps its state (prune/deprune keep their SGD momentum across budget phases).
"""

from __future__ import annotations

from typing import Any

from raysplit.training.adam import Adam
from raysplit.training.optim_base import FunctionalOptimizer
from raysplit.training.sgd import SGD

OPTIMIZERS: dict[str, type[FunctionalOptimizer]] = {"sgd": SGD, "adam": Adam}


def optimizer_name(opt: FunctionalOptimizer) -> str:
    return next(name for name, cls in OPTIMIZERS.items() if type(opt) is cls)


def make_optimizer(name: str, groups: list[dict[str, Any]], *, lr: float, momentum: float,
                   weight_decay: float) -> FunctionalOptimizer:
    """The optimizer ``name`` over parameter groups.

    SGD takes the network's momentum and weight decay; Adam takes torch's defaults
    (betas 0.9/0.999, eps 1e-8) and no weight decay in any group, as in BottleFit's
    recipe (its stage-1 Adam has only a learning rate).
    """
    if name == "sgd":
        return SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return Adam([{**g, "weight_decay": 0.0} for g in groups], lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")
