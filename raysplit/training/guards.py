"""Refusing bad input and catching non-finite numbers, with a reason a metric can count.

Two error types cross from a shard to its client (Ray re-raises a task's exception as an
instance of the same class, so a client can tell them apart):

* :class:`Refused`: a message was not admitted (malformed, another tenant's, the wrong
  shape for the tail, a replayed step, too large...). ``reason`` is one of
  :data:`REASONS`, the tag of the ``raysplit_rejected_messages`` metric.
* :class:`NonFiniteError`: a loss, an activation or a gradient held NaN or Inf. Nothing
  was applied; what happens next is the ``--on-nonfinite`` policy (skip the step, or
  stop the client), never a silent update.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raysplit.codec.format import CodecError

#: Why a message is refused (``Refused.reason``; the metric's ``reason`` tag).
REASONS = (
    "malformed",      # the codec could not decode it (truncated, bad CRC, bad fields)
    "oversized",      # larger than any message of this run can be
    "unauthenticated",  # the keyed tag is missing or wrong (another tenant's key)
    "tenant",         # it names another tenant
    "cut",            # it belongs to another split point
    "kind",           # not the kind of message this call takes
    "shape",          # the wrong shape for the tail
    "client",         # a client id this shard does not serve
    "replayed",       # a step id at or below one already applied (and not in the log)
    "labels",         # labels missing, out of range, or present where they must not be
    "nonfinite",      # NaN/Inf in the payload
)

#: Where a non-finite value was found (``NonFiniteError.where``).
WHERES = ("activation", "loss", "gradient")


class Refused(ValueError):
    """A message was refused. Args: reason (one of REASONS), message."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown refusal reason {reason!r}; allowed: {', '.join(REASONS)}")
        super().__init__(reason, message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"refused ({self.reason}): {self.message}"


class Malformed(Refused, CodecError):
    """A message the codec could not decode: a Refused ("malformed" or "nonfinite") that is
    also the codec's CodecError."""


class NonFiniteError(FloatingPointError):
    """NaN or Inf in a step. Args: where (one of WHERES), message."""

    def __init__(self, where: str, message: str) -> None:
        if where not in WHERES:
            raise ValueError(f"unknown place {where!r}; allowed: {', '.join(WHERES)}")
        super().__init__(where, message)
        self.where = where
        self.message = message

    def __str__(self) -> str:
        return f"non-finite {self.where}: {self.message}"


def check_finite(t: torch.Tensor, where: str, what: str) -> None:
    """Raise NonFiniteError if ``t`` holds NaN/Inf (one reduction when it does not)."""
    if t.numel() and not bool(torch.isfinite(t.detach().sum())) and not bool(torch.isfinite(t.detach()).all()):
        n_nan = int(torch.isnan(t.detach()).sum())
        n_inf = int(torch.isinf(t.detach()).sum())
        raise NonFiniteError(where, f"{what}: {n_nan} NaN and {n_inf} Inf of {t.numel()} values")


def check_finite_grads(params, what: str) -> None:
    """Raise NonFiniteError if any parameter's gradient holds NaN/Inf (before an optimizer
    step, so a bad gradient never reaches the weights)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    total = torch.stack([g.detach().float().sum() for g in grads]).sum()
    if bool(torch.isfinite(total)):
        return
    for g in grads:
        check_finite(g, "gradient", what)


@dataclass(frozen=True)
class SkippedStep:
    """A training step skipped under ``--on-nonfinite skip`` (an event in the run's records:
    its samples were not trained on, and nothing of it was applied).

    Args:
        run, tenant, client: identity.
        epoch, batch, step: which step.
        samples: its batch size.
        where: "activation", "loss" or "gradient".
        error: what was found.
    """

    run: str
    tenant: str
    client: int
    epoch: int
    batch: int
    step: int
    samples: int
    where: str
    error: str
