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

and BottleFit's (Matsubara et al. 2022), on a bottleneck-injected student
(``SplitConfig.bottleneck``, ``raysplit.models.bottleneck``) distilled from a teacher
(``SplitConfig.teacher``); every channel of the bottleneck travels:

============  ===========================================================================
method        phases (stages)
============  ===========================================================================
kd            one: KD (eq. 6), SGD
bottlefit     stage 1 GHND (eq. 4; later layers frozen; Adam), stage 2 KD (SGD)
bottlefit-fe  the same with the encoder frozen in stage 2
============  ===========================================================================

Training the student from scratch is ``none`` on it (cross-entropy, nothing frozen).

:func:`make_plan` turns a method, the budgets, the epochs and selectLr into a
:class:`Plan`: the schedule plus, per phase, its :class:`Stage` (objectives and frozen
parameter groups), the filter reset on entry and whether the model is saved on exit.
Clients, shards and the scheduler all hold the same plan and index it by phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from raysplit.budget.schedule import Schedule, broadcast_epochs
from raysplit.training.objectives import DISTILL_LOSSES, REGULARIZERS, TASK_LOSSES
from raysplit.training.optimizers import OPTIMIZERS

#: Parameter groups a stage can freeze: the client's and the server's named modules
#: (a bottleneck student's server half is its decoder, then the teacher's later layers, "tail").
GROUPS = ("head", "compressor", "decompressor", "decoder", "tail")


@dataclass(frozen=True)
class Stage:
    """What a phase trains and with which losses.

    Args:
        name: label in logs and records.
        task_loss: the server's per-sample loss: on the logits (``objectives.TASK_LOSSES``), or a
            distillation loss against a teacher (``objectives.DISTILL_LOSSES``).
        regularizers: client-side terms added to the loss (``objectives.REGULARIZERS``).
        frozen: parameter groups left unchanged in this stage (``GROUPS``): no gradient, and their
            batch norms use and keep their running statistics (eval mode).
        optimizer: ``optimizers.OPTIMIZERS`` name; entering a stage with another optimizer than the
            one running starts a fresh one, the same one keeps its state.
        lr_decay: the learning rate is multiplied by this after ``decay_after`` of the phase's
            epochs (BottleFit: x0.1 after 5 of 10); 1 = no decay.
        decay_after: fraction of the phase's epochs (rounded up) before the decay.
    """

    name: str = "train"
    task_loss: str = "cross_entropy"
    regularizers: tuple[str, ...] = ("prune",)
    frozen: tuple[str, ...] = ()
    optimizer: str = "sgd"
    lr_decay: float = 1.0
    decay_after: float = 0.5

    def __post_init__(self) -> None:
        if self.task_loss not in TASK_LOSSES and self.task_loss not in DISTILL_LOSSES:
            raise ValueError(
                f"unknown task loss {self.task_loss!r}; allowed: {', '.join([*TASK_LOSSES, *DISTILL_LOSSES])}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
        if not self.lr_decay > 0 or not 0 < self.decay_after <= 1:
            raise ValueError(f"need lr_decay > 0 and 0 < decay_after <= 1, got {self.lr_decay}, {self.decay_after}")
        for r in self.regularizers:
            if r not in REGULARIZERS:
                raise ValueError(f"unknown regularizer {r!r}; allowed: {', '.join(REGULARIZERS)}")
        for g in self.frozen:
            if g not in GROUPS:
                raise ValueError(f"unknown parameter group {g!r} to freeze; allowed: {', '.join(GROUPS)}")

    @property
    def distills(self) -> bool:
        """Whether the loss needs the teacher (its activation travels with the student's)."""
        return self.task_loss in DISTILL_LOSSES

    def lr(self, base: float, epoch_in_phase: int, phase_epochs: int) -> float:
        """The learning rate ``epoch_in_phase`` epochs into a phase of ``phase_epochs``."""
        if self.lr_decay != 1.0 and epoch_in_phase >= math.ceil(self.decay_after * phase_epochs):
            return base * self.lr_decay
        return base


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
        stages: methods whose phases train differently (BottleFit): one phase per stage, in
            order, each sending every channel; () = ``stage`` for every phase.
        save_last: save one loadable model at the end of the last phase.
        student: needs a bottleneck-injected student (``SplitConfig.bottleneck``).
    """

    name: str
    summary: str
    compression: bool
    order: str
    reset: str | None
    save_each_budget: bool
    stage: Stage = field(default_factory=Stage)
    stages: tuple[Stage, ...] = ()
    save_last: bool = False
    student: bool = False

    @property
    def distills(self) -> bool:
        return any(s.distills for s in (self.stages or (self.stage,)))


_GHND = Stage("ghnd", task_loss="ghnd", regularizers=(), frozen=("tail",), optimizer="adam", lr_decay=0.1)
_KD = Stage("kd", task_loss="kd", regularizers=(), lr_decay=0.1)

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
        # BottleFit (Matsubara et al. 2022, the public recipe config/ghnd_kd/*.yaml): stage 1 GHND
        # with the later layers frozen, Adam; stage 2 KD, SGD; both x0.1 after half their epochs.
        Method("kd", "knowledge distillation of a bottleneck student from its teacher (BottleFit eq. 6)", False,
               "one", None, False, Stage("kd", task_loss="kd", regularizers=(), lr_decay=0.1), save_last=True,
               student=True),
        Method("bottlefit", "BottleFit: GHND (eq. 4, later layers frozen, Adam), then KD (eq. 6, SGD)", False,
               "one", None, False, stages=(_GHND, _KD), save_last=True, student=True),
        Method("bottlefit-fe", "BottleFit with the encoder frozen in stage 2", False, "one", None, False,
               stages=(_GHND, Stage("kd-fe", task_loss="kd", regularizers=(), frozen=("head",), lr_decay=0.1)),
               save_last=True, student=True),
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
        """selectLr's learning rate, then the phase's stage decay."""
        p = self.phase_at(epoch)
        return p.stage.lr(self.schedule.lr_at(epoch), epoch - p.first_epoch, p.epochs)


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


def check_network(method: Method, bottleneck: int | None, teacher: str | None) -> None:
    """The network a method needs: BottleFit's methods a bottleneck student and a teacher;
    Prune-Deprune's module does not go on a student."""
    if method.student and bottleneck is None:
        raise ValueError(f"method {method.name!r} trains a bottleneck-injected student: give --bottleneck CHANNELS")
    if method.distills and teacher is None:
        raise ValueError(
            f"method {method.name!r} distils from a teacher: give --teacher PATH (the model file of a trained "
            "'none' run of the same model and split, e.g. runs/teacher/models/budget_128.pt)"
        )
    if method.compression and bottleneck is not None:
        raise ValueError(
            f"method {method.name!r} adds Prune-Deprune's module, which a bottleneck student does not have; "
            "with --bottleneck use none, kd, bottlefit or bottlefit-fe"
        )


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
    save_last: bool = False,
) -> Plan:
    """The plan of a run. One epochs entry means the same for every budget. A method
    without the module sends every channel: its one phase has B = ``channels`` and
    lasts the total of the epochs given (so ``--method none`` trains as long as the
    schedule it replaces: the epochs as given, summed); a multi-stage method has one
    phase per stage, each sending every channel, with one epochs entry per stage (or one
    for all). ``save_last`` saves a loadable model at the end of the run whatever the
    method."""
    m = get_method(method)
    epochs = tuple(int(e) for e in epochs_per_budget)
    if m.stages:
        if channels is None:
            raise ValueError(f"method {method!r} needs the channel count at the split to make its plan")
        n = len(m.stages)
        if len(epochs) not in (1, n):
            raise ValueError(
                f"method {method!r} has {n} stages ({', '.join(s.name for s in m.stages)}): epochs_per_budget "
                f"takes one entry per stage (or one for all), got {list(epochs)}"
            )
        budgets, epochs = (int(channels),) * n, broadcast_epochs(epochs, n)
    elif not m.compression:
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
            stage=m.stages[p.index] if m.stages else m.stage,
            reset=m.reset if (p.index > 0 and reset_filter) else None,
            save_on_exit=m.save_each_budget or ((m.save_last or save_last) and p.index == len(budgets) - 1),
        )
        for p in schedule.phases()
    )
    return Plan(m.name, m.compression, schedule, phases)
