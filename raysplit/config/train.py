"""One training run: what to train, on which data, on which schedule, where its records go."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from raysplit.config.checks import check_at_least, check_counts_or_none
from raysplit.config.cli import option
from raysplit.config.link import LinkConfig
from raysplit.config.split import SplitConfig
from raysplit.data import DATASETS
from raysplit.training.methods import METHODS, check_budgets, check_network, get_method

EVALUATIONS = ("share", "full")
NONFINITE = ("skip", "stop")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class TrainConfig:
    """One training run (local or on the cluster). Defaults are sized to finish in minutes on
    2 cores with 32 clients.

    Args:
        method: none (no module) | fixed (one budget) | deprune (budgets ascending) | prune (budgets
            descending, one saved model per budget).
        split: the network (see SplitConfig).
        link: the emulated network between clients and shards (see LinkConfig; none by default).
        dataset: the data set (``raysplit.data.DATASETS``).
        data_dir: data set folder (default: $RAYSPLIT_DATA, then the system folder).
        image_size: square image side in px (default: the data set's, raised to the smallest the model
            accepts).
        budgets: channels sent per phase, e.g. 4,128.
        epochs_per_budget: epochs per phase, e.g. 15,3 (one number = the same for every budget).
        lr: SGD learning rate.
        gamma: selectLr: the learning rate is multiplied by gamma for the first lk epochs after a
            transition (1 = off).
        lk: epochs of boosted learning rate after a transition.
        reset_filter: redraw filter entries at a transition (resetPrune / resetdePrune).
        batch_size: samples per step and client.
        train_subset: use a class-stratified subset of this many training samples (all = every one).
        test_subset: evaluate on a class-stratified subset of this many test samples (all = every one).
        max_batches: at most this many steps per epoch and client (all = the whole partition).
        evaluate: share: each client scores its own share of the test set (the work stays the same
            however many clients; with shared heads it is one evaluation of the whole set); full:
            every client scores the whole test set.
        checkpoint_every: save every client's, shard's and the scheduler's state every this many
            epochs under checkpoints/ (0 = never).
        save_model: also save the trained model at the end of the run as models/budget_<B>.pt, whatever the
            method (prune saves one per budget, BottleFit's methods the last, anyway).
        out: run directory (default: runs/<method>).
        tenant: the tenant this run belongs to; carried in records, metric tags, cgroups and every
            wire message.
        tenant_key_file: file with the tenant's secret key (64 hex digits, mode 600; make one with
            python -m raysplit.keys PATH); every message carries an HMAC from a key derived from it. Default:
            $RAYSPLIT_TENANT_KEY, else a fresh key for this run.
        run_id: this run's identity in records and metrics (default: <method>-<time>-<random>).
        progress: show progress bars.
        on_nonfinite: NaN/Inf in a step's loss, activation or gradient: skip the step (nothing of it is
            applied; it is counted and logged) or stop the client.
        resume: continue the run in this directory from its last checkpoint (written with
            --checkpoint-every); its configuration is read from there.
    """

    method: str = field(default="deprune", metadata=option(choices=lambda: tuple(METHODS)))
    split: SplitConfig = field(default_factory=SplitConfig)
    link: LinkConfig = field(default_factory=LinkConfig)
    dataset: str = field(default="fashion-mnist", metadata=option(choices=lambda: tuple(DATASETS)))
    data_dir: str | None = field(default=None, metadata=option(none_word="default"))
    image_size: int | None = field(default=None, metadata=option(none_word="auto"))
    budgets: tuple[int, ...] = (4, 128)
    epochs_per_budget: tuple[int, ...] = (2, 1)
    lr: float = 0.01
    gamma: float = 1.0
    lk: int = 1
    reset_filter: bool = True
    batch_size: int = 32
    train_subset: int | None = field(default=8192, metadata=option(none_word="all"))
    test_subset: int | None = field(default=500, metadata=option(none_word="all"))
    max_batches: int | None = field(default=None, metadata=option(none_word="all"))
    evaluate: str = field(default="share", metadata=option(choices=EVALUATIONS))
    checkpoint_every: int = 0
    save_model: bool = False
    out: str | None = field(default=None, metadata=option(none_word="auto"))
    tenant: str = "default"
    tenant_key_file: str | None = field(default=None, metadata=option(none_word="none", metavar="PATH"))
    run_id: str | None = field(default=None, metadata=option(none_word="auto"))
    progress: bool = True
    on_nonfinite: str = field(default="skip", metadata=option(choices=NONFINITE))
    resume: str | None = field(default=None, metadata=option(metavar="RUN_DIR"))

    def __post_init__(self) -> None:
        m = get_method(self.method)
        object.__setattr__(self, "budgets", tuple(int(b) for b in self.budgets))
        object.__setattr__(self, "epochs_per_budget", tuple(int(e) for e in self.epochs_per_budget))
        if self.split.use_module != m.compression:
            object.__setattr__(self, "split", self.split.replace(use_module=m.compression))
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown data set {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        if not self.budgets or not self.epochs_per_budget:
            raise ValueError("budgets and epochs_per_budget must not be empty")
        if len(self.epochs_per_budget) not in (1, len(self.budgets)) and m.compression:
            raise ValueError(
                f"epochs_per_budget {list(self.epochs_per_budget)} must have one entry per budget "
                f"{list(self.budgets)} (or be a single number)"
            )
        if min(self.budgets) < 1 or min(self.epochs_per_budget) < 1:
            raise ValueError(f"budgets and epochs must be >= 1, got {list(self.budgets)} x {list(self.epochs_per_budget)}")
        check_budgets(m, self.budgets)
        check_network(m, self.split.bottleneck, self.split.teacher)
        for name in ("lr", "gamma"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        check_at_least(self, {"lk": 0, "batch_size": 1, "checkpoint_every": 0})
        check_counts_or_none(self, ("train_subset", "test_subset", "max_batches", "image_size"))
        if self.on_nonfinite not in NONFINITE:
            raise ValueError(f"unknown on_nonfinite {self.on_nonfinite!r}; choose one of {', '.join(NONFINITE)}")
        if self.evaluate not in EVALUATIONS:
            raise ValueError(f"unknown evaluate {self.evaluate!r}; choose one of {', '.join(EVALUATIONS)}")
        for name in ("tenant", "run_id"):
            v = getattr(self, name)
            if v is not None and not _NAME.match(v):
                raise ValueError(
                    f"{name} {v!r} invalid: 1-64 characters of letters, digits, '_', '.', '-', starting with a "
                    f"letter or digit"
                )
        if self.out is None:
            object.__setattr__(self, "out", f"runs/{self.method}")

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
