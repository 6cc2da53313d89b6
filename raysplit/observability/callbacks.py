"""Hooks for watching a run without patching it (as Ray Train's callbacks do).

The run writer calls every callback as records arrive, in the local trainer and on the
cluster alike: ``on_steps`` with each batch of step rows (every step, with its timing
breakdown), ``on_epoch`` when an epoch is complete for every live client, ``on_event``
for transitions and barriers, ``on_run_end`` with the summary. Benchmarks and progress
bars are callbacks.
"""

from __future__ import annotations

from typing import Any, Sequence


class Callback:
    """Override what you need; every method defaults to doing nothing."""

    def on_steps(self, rows: Sequence[Any]) -> None:
        """New StepRows (``raysplit.records.rows``)."""

    def on_epoch(self, row: Any) -> None:
        """An EpochRow, once every live client has evaluated that epoch."""

    def on_event(self, event: Any) -> None:
        """A scheduler event: a budget Transition, a Barrier, a client failure."""

    def on_run_end(self, summary: Any) -> None:
        """The run's Summary, after summary.json is written."""


class ProgressBar(Callback):
    """A tqdm bar over every client's steps, moved per step as rows arrive, with the
    epoch, budget, loss and accuracy of the latest complete epoch."""

    def __init__(self, total_steps: int, desc: str = "steps", enabled: bool = True, file=None) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total_steps, desc=desc, unit="step", disable=not enabled, dynamic_ncols=True,
                        file=file)
        self.post: dict[str, str] = {}

    def on_steps(self, rows: Sequence[Any]) -> None:
        last = rows[-1]
        self.post.update(epoch=str(last.epoch), B=str(last.budget), loss=f"{last.loss:.3f}")
        self.bar.set_postfix(self.post, refresh=False)
        self.bar.update(len(rows))

    def on_epoch(self, row: Any) -> None:
        self.post["acc"] = f"{row.test_accuracy:.3f}"
        self.bar.set_postfix(self.post)

    def on_run_end(self, summary: Any) -> None:
        self.bar.close()


class StepCollector(Callback):
    """Keeps every StepRow and EpochRow of a run in memory (benchmarks, notebooks)."""

    def __init__(self) -> None:
        self.rows: list[Any] = []
        self.epochs: list[Any] = []

    def on_steps(self, rows: Sequence[Any]) -> None:
        self.rows.extend(rows)

    def on_epoch(self, row: Any) -> None:
        self.epochs.append(row)
