"""Budget policies behind one interface (:class:`BudgetPolicy`), in a registry.

``make_policy(name, ...)`` is the only place a policy's name is looked at.
"""

from __future__ import annotations

from raysplit.budget.policies.adaptive import AdaptiveConfig, AdaptivePolicy
from raysplit.budget.policies.asynchronous import AsyncPolicy
from raysplit.budget.policies.base import (
    AGGREGATE,
    DONE,
    DONE_DIRECTIVE,
    EVALUATE,
    TRAIN,
    WAIT,
    Barrier,
    BudgetPolicy,
    Directive,
    Event,
    Finished,
    Observation,
    Round,
    Transition,
    Wait,
    segments,
)
from raysplit.budget.policies.sync import SyncPolicy

#: name -> policy class; every class takes (plan, steps_per_epoch, segment_steps, aggregate), and
#: its own keyword options (``make_policy(options=...)``; adaptive: config=AdaptiveConfig).
POLICIES: dict[str, type] = {"sync": SyncPolicy, "async": AsyncPolicy, "adaptive": AdaptivePolicy}
#: the policies that take a participant selection (they have rounds: common epochs)
SELECTING = ("sync", "adaptive")


def make_policy(name: str, plan, steps_per_epoch: dict[int, int], *, segment_steps: int = 0,
                aggregate: bool = False, options: dict | None = None, selection=None) -> BudgetPolicy:
    """``options``: {policy name: keyword arguments}; only the chosen policy's are passed.
    ``selection``: who takes part in each epoch (``raysplit.budget.selection.Selection``;
    None = every live client); only the sync policy has rounds to select for (and the
    adaptive one over it, ``adaptive_base`` sync)."""
    if name not in POLICIES:
        raise ValueError(f"unknown scheduling policy {name!r}; choose one of {', '.join(POLICIES)}")
    kw = dict((options or {}).get(name, {}))
    if selection is not None and not selection.everyone:
        if name not in SELECTING:
            raise ValueError(f"participant selection needs policy 'sync' or 'adaptive' (rounds); got {name!r}")
        kw["selection"] = selection
    return POLICIES[name](plan, dict(steps_per_epoch), segment_steps, aggregate, **kw)


__all__ = [
    "AGGREGATE", "DONE", "DONE_DIRECTIVE", "EVALUATE", "TRAIN", "WAIT", "AdaptiveConfig", "AdaptivePolicy",
    "AsyncPolicy", "Barrier", "BudgetPolicy",
    "Directive", "Event", "Finished", "Observation", "POLICIES", "Round", "SyncPolicy", "Transition", "Wait",
    "make_policy", "segments",
]
