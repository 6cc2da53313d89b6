"""A NAIR run (``jobs/nair.py``): the original model, the fine-tuned variants, the link and
the deadlines they are compared at."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from raysplit.config.checks import check_at_least, check_counts_or_none
from raysplit.config.cli import option
from raysplit.data import DATASETS

#: What a NAIR run can compare: the fine-tuning variants (``training.slice_tuning.VARIANTS``)
#: and "module", Prune-Deprune's compression module at the budget that fits each deadline.
COMPARED = ("original", "plain", "clio", "nair", "nair-no-penalty", "nair-no-weights", "nair-neither", "module")
IMPORTANCE = ("folded", "kernel")


def _variants(text) -> tuple[str, ...]:
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if str(s).strip()]
    bad = [s for s in items if s not in COMPARED]
    if bad or not items:
        raise ValueError(f"unknown variant(s) {', '.join(bad) or '(none)'}; allowed: {', '.join(COMPARED)}")
    return tuple(dict.fromkeys(items))


def _deadlines(text) -> tuple[float, ...] | None:
    from raysplit.link.units import parse_time

    if text is None or (isinstance(text, str) and text.strip().lower() == "auto"):
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    out = tuple(sorted({parse_time(str(s).strip() if isinstance(s, str) else s, "deadline", allow_zero=False)
                        for s in items if str(s).strip()}))
    if not out:
        raise ValueError("deadlines: give 'auto' or a comma list of times, e.g. 150ms,300ms,1s")
    return out


@dataclass(frozen=True)
class NairConfig:
    """A NAIR run: train (or load) the original split model, fine-tune it for ordered
    slices, and measure accuracy against the latency deadline on a link.

    Args:
        dataset: the data set (``raysplit.data.DATASETS``).
        data_dir: data set folder (default: $RAYSPLIT_DATA, then the system folder).
        image_size: square image side in px (default: the data set's, raised to what the model needs).
        train_subset: class-stratified training subset (all = every sample).
        test_subset: class-stratified test subset the deadlines are measured on (all = every sample).
        batch_size: samples per step (the paper: 80).
        original: model file of a trained run without the compression module (``--method none
            --save-model``: models/budget_<C>.pt) to start from; default: train one here for original_epochs.
        original_epochs: epochs of ordinary training for the original model (when not loaded).
        epochs: fine-tuning epochs of each variant (and of the module's each smaller budget).
        lr: initial SGD learning rate, cosine-annealed to 0 over each training (the paper: 1e-2).
        slices: J, the number of transmission slices the split activation is cut into.
        w_non: the non-linear mapping weight of eq. 11 (the paper: 2).
        penalty: lambda, the weight of eq. 12's penalty relative to its value at the start.
        importance: folded (the split layer's convolution folded with its batch norm) or kernel (the
            convolution alone, as Li et al.) for eq. 8.
        variants: what to compare, comma-separated: original, plain (the original trained on as
            long as the others are fine-tuned), clio, nair, nair-no-penalty, nair-no-weights,
            nair-neither, module.
        module_run: run directory of a trained ``--method prune`` run whose models/budget_<B>.pt
            are the compression module's budgets; default (with variant module): train one here.
        link: the client's uplink (``raysplit.link``: e.g. 250kbit, 250kbit/20ms, lte, or a trace
            with trace=FILE).
        deadlines: transmission deadlines (seconds from the first byte sent to the last needed
            arriving), comma-separated, or auto: when 1, 2, 3, 4, 6, 8, ... slices arrive.
        request_interval: seconds between two requests on the link's clock (matters with a trace).
        link_seed: seed of the link's random draws (fading, loss, jitter).
        device: auto (a GPU when visible), cpu or cuda.
        out: run directory.
        progress: print a line per epoch.
    """

    dataset: str = field(default="fashion-mnist", metadata=option(choices=lambda: tuple(DATASETS)))
    data_dir: str | None = field(default=None, metadata=option(none_word="default"))
    image_size: int | None = field(default=None, metadata=option(none_word="auto"))
    train_subset: int | None = field(default=8192, metadata=option(none_word="all"))
    test_subset: int | None = field(default=2000, metadata=option(none_word="all"))
    batch_size: int = 80
    original: str | None = field(default=None, metadata=option(none_word="train"))
    original_epochs: int = 4
    epochs: int = 2
    lr: float = 0.01
    slices: int = 8
    w_non: float = 2.0
    penalty: float = 0.1
    importance: str = field(default="folded", metadata=option(choices=IMPORTANCE))
    variants: tuple[str, ...] = field(default=("original", "nair"), metadata=option(parse=_variants))
    module_run: str | None = field(default=None, metadata=option(none_word="train"))
    link: str = "250kbit"
    deadlines: tuple[float, ...] | None = field(default=None, metadata=option(parse=_deadlines, none_word="auto"))
    request_interval: float = 1.0
    link_seed: int = 0
    device: str = field(default="auto", metadata=option(choices=("auto", "cpu", "cuda")))
    out: str = "runs/nair"
    progress: bool = True

    def __post_init__(self) -> None:
        from raysplit.link.spec import parse_link

        if self.dataset not in DATASETS:
            raise ValueError(f"unknown data set {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        object.__setattr__(self, "variants", _variants(self.variants))
        if self.deadlines is not None:
            object.__setattr__(self, "deadlines", _deadlines(self.deadlines))
        check_at_least(self, {"batch_size": 1, "original_epochs": 1, "epochs": 1, "slices": 1})
        check_counts_or_none(self, ("train_subset", "test_subset", "image_size"))
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.w_non < 0 or self.penalty < 0:
            raise ValueError(f"w_non and penalty must be >= 0, got {self.w_non}, {self.penalty}")
        if self.importance not in IMPORTANCE:
            raise ValueError(f"unknown importance {self.importance!r}; choose one of {', '.join(IMPORTANCE)}")
        if not self.request_interval >= 0:
            raise ValueError(f"request_interval must be >= 0 s, got {self.request_interval}")
        parse_link(self.link)  # raises naming what is wrong

    def replace(self, **changes) -> "NairConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
