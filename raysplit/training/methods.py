"""Training methods as configurations, and the plan a run follows.

A method is data, not an if-chain. Prune-Deprune's four (paper §3.2-3.3):

=========  ===========  ==============  ===================  =========================
method     module       budgets         at a transition      per budget
=========  ===========  ==============  ===================  =========================
none       no           all channels    -                    -
fixed      yes          exactly one     -                    -
deprune    yes          ascending       resetdePrune         -
prune      yes          descending      resetPrune           one loadable model saved
=========  ===========  ==============  ===================  =========================

:func:`make_plan` turns a method, the budgets, the epochs and selectLr into a
:class:`Plan`: the schedule plus, per phase, its :class:`Stage` (objectives and frozen
parameter groups), the filter reset on entry and whether the model is saved on exit.
Clients, shards and the scheduler all hold the same plan and index it by phase.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raysplit.budget.schedule import Schedule, broadcast_epochs
from raysplit.training.objectives import REGULARIZERS, TASK_LOSSES

#: Parameter groups a stage can freeze: the client's and the server's named modules.
GROUPS = ("head", "compressor", "decompressor", "tail")


@dataclass(frozen=True)
class Stage:
    """What a phase trains and with which losses.

    Args:
        name: label in logs and records.
        task_loss: the server's per-sample loss on the logits (``objectives.TASK_LOSSES``).
        regularizers: client-side terms added to the loss (``objectives.REGULARIZERS``).
        frozen: parameter groups left unchanged in this stage (``GROUPS``).
    """

    name: str = "train"
    task_loss: str = "cross_entropy"
    regularizers: tuple[str, ...] = ("prune",)
    frozen: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.task_loss not in TASK_LOSSES:
            raise ValueError(f"unknown task loss {self.task_loss!r}; allowed: {', '.join(TASK_LOSSES)}")
        for r in self.regularizers:
            if r not in REGULARIZERS:
                raise ValueError(f"unknown regularizer {r!r}; allowed: {', '.join(REGULARIZERS)}")
        for g in self.frozen:
            if g not in GROUPS:
                raise ValueError(f"unknown parameter group {g!r} to freeze; allowed: {', '.join(GROUPS)}")


@dataclass(frozen=True)
class Method:
    """A training method as a configuration.

    Args:
        name: the CLI name.
        summary: one line for --help and the README.
        compression: whether the learned compression module runs (False: l_n travels whole).
        order: which budget lists it takes: "one", "ascending" or "descending".
        reset: filter reset when entering a later phase: "deprune" (unselected entries
            redrawn, so pruned channels can come back) or "prune" (selected ones redrawn,
            so they can be trained towards 0); None = no reset.
        save_each_budget: save one loadable model at the end of every phase.
        stage: the objectives and frozen groups of every phase.
    """

    name: str
    summary: str
    compression: bool
    order: str
    reset: str | None
    save_each_budget: bool
    stage: Stage = field(default_factory=Stage)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("none", "plain split learning: every channel of l_n travels, no module", False, "one", None, False,
               Stage(regularizers=())),
        Method("fixed", "one budget B for the whole run", True, "one", None, False),
        Method("deprune", "raise the budget (e.g. 4 -> 128), resetdePrune at each step up", True, "ascending",
               "deprune", False),
        Method("prune", "lower the budget (e.g. 128 -> 32 -> 4), resetPrune, one saved model per budget", True,
               "descending", "prune", True),
    )
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


@dataclass(frozen=True)
class PlanPhase:
    """One phase of a plan.

    Args:
        index: position in the plan (0 = first).
        budget: channels sent, B.
        first_epoch, epochs: where it starts in the run and how long it lasts.
        stage: objectives and frozen groups.
        reset: filter reset on entering it (None for the first phase).
        save_on_exit: save a loadable model when it ends.
    """

    index: int
    budget: int
    first_epoch: int
    epochs: int
    stage: Stage
    reset: str | None
    save_on_exit: bool

    @property
    def last_epoch(self) -> int:
        return self.first_epoch + self.epochs - 1


@dataclass(frozen=True)
class Plan:
    """The schedule of a run with what happens in and between its phases."""

    method: str
    compression: bool
    schedule: Schedule
    phases: tuple[PlanPhase, ...]

    @property
    def total_epochs(self) -> int:
        return self.schedule.total_epochs

    def phase_at(self, epoch: int) -> PlanPhase:
        return self.phases[self.schedule.phase_at(epoch).index]

    def lr_at(self, epoch: int) -> float:
        return self.schedule.lr_at(epoch)


def check_budgets(method: Method, budgets: tuple[int, ...], channels: int | None = None) -> None:
    """Budgets must fit the method's order and (when known) the channels φ on the wire."""
    for b in budgets if channels is not None else ():
        if not 1 <= b <= channels:
            raise ValueError(f"budget {b} out of range: the split has {channels} channels, allowed 1..{channels}")
    if method.order == "one" and len(budgets) != 1 and method.compression:
        raise ValueError(f"method {method.name!r} takes exactly one budget, got {list(budgets)}")
    if method.order == "ascending" and list(budgets) != sorted(budgets):
        raise ValueError(f"method {method.name!r} raises the budget: budgets must be ascending, got {list(budgets)}")
    if method.order == "descending" and list(budgets) != sorted(budgets, reverse=True):
        raise ValueError(f"method {method.name!r} lowers the budget: budgets must be descending, got {list(budgets)}")


def make_plan(
    method: str,
    budgets: tuple[int, ...],
    epochs_per_budget: tuple[int, ...],
    *,
    lr: float,
    gamma: float = 1.0,
    lk: int = 0,
    reset_filter: bool = True,
    channels: int | None = None,
) -> Plan:
    """The plan of a run. One epochs entry means the same for every budget. A method
    without the module sends every channel: its one phase has B = ``channels`` and
    lasts the total of the epochs given (so ``--method none`` trains as long as the
    schedule it replaces: the epochs as given, summed)."""
    m = get_method(method)
    epochs = tuple(int(e) for e in epochs_per_budget)
    if not m.compression:
        if channels is None:
            raise ValueError(f"method {method!r} needs the channel count at the split to make its plan")
        budgets, epochs = (int(channels),), (sum(epochs),)
    epochs = broadcast_epochs(epochs, len(budgets))
    budgets = tuple(int(b) for b in budgets)
    check_budgets(m, budgets, channels)
    schedule = Schedule(budgets, epochs, lr, gamma, lk)
    phases = tuple(
        PlanPhase(
            index=p.index,
            budget=p.budget,
            first_epoch=p.first_epoch,
            epochs=p.epochs,
            stage=m.stage,
            reset=m.reset if (p.index > 0 and reset_filter) else None,
            save_on_exit=m.save_each_budget,
        )
        for p in schedule.phases()
    )
    return Plan(m.name, m.compression, schedule, phases)
