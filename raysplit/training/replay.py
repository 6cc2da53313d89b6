"""Rebuild a client's exact state from its recovery point and the shard's step log.

A client's state after step k is a function of its state at its recovery point (after
its last evaluation), the batches it trained on since (fixed by seed, epoch and batch
index) and the gradient messages the shard sent back for them. The shard logs those
replies (``runtime/steplog.py``), so a restarted client loads its recovery state and
re-runs its side of every logged step: the same head forward, with the logged gradient
instead of a new server step. The shard applies nothing (it already did), and the
client ends where it was when it died, step for step.

Step k of a client is batch (k-1) % S of epoch (k-1) // S, S its batches per epoch: the
policies hand every client all of its batches every epoch, in order, and every batch
takes one step id (a skipped or lost step too). A step missing from the log changed
nothing on the shard (it was skipped under ``--on-nonfinite skip``, or its update was
lost with a shard that restarted from a snapshot), so replay passes over it.
"""

from __future__ import annotations

from raysplit.budget.policies import TRAIN, Directive
from raysplit.codec.format import unpack_header
from raysplit.data import batches
from raysplit.transport.base import Reply, Transport


class LogTransport(Transport):
    """A transport that answers from the shard's step log: the reply for the message the
    client just encoded (its header's sequence number), and nothing is sent anywhere."""

    def __init__(self, replies: dict[int, Reply]) -> None:
        self.replies = replies

    def round_trip(self, up: bytes, *, lr: float, phase: int) -> Reply:
        return self.replies[unpack_header(memoryview(up))[0].step]

    def predict(self, up: bytes):
        raise RuntimeError("a replayed client does not evaluate: evaluation happens after recovery")


def step_position(step: int, steps_per_epoch: int) -> tuple[int, int]:
    """(epoch, batch) of a client's step number ``step`` (1 = its first step)."""
    if steps_per_epoch < 1 or step < 1:
        raise ValueError(f"need step >= 1 and steps_per_epoch >= 1, got {step} and {steps_per_epoch}")
    return divmod(step - 1, steps_per_epoch)


def replay(loop, entries: list[tuple[int, Reply]], steps_per_epoch: int) -> int:
    """Re-run ``loop``'s client through the logged ``entries`` (step, reply) after its
    current step; their rows go to its sink again (the run writer keeps each step once).
    Returns the steps replayed. Metrics are not recorded again."""
    k = getattr(loop.client, "seqs_per_step", 1)  # messages per step (U-shaped: 2)
    replies = {s: r for s, r in entries if s > k * loop.client.step}
    if not replies:
        return 0
    last = max(replies) // k  # the last step all of whose messages were logged
    transport = LogTransport(replies)
    metrics, loop.metrics = loop.metrics, None
    # The logged replies come from the shard's own state (or a checkpoint file), not the
    # wire; a resumed run may hold a new tenant key, so their tags are not checked here.
    grad_key, loop.client.grad_key = loop.client.grad_key, None
    n = 0
    try:
        while loop.client.step < last:
            step = loop.client.step + 1
            epoch, batch = step_position(step, steps_per_epoch)
            phase = loop.plan.phase_at(epoch)
            if batch == 0 and epoch == phase.first_epoch:
                loop.enter_phase(Directive(TRAIN, epoch=epoch, phase=phase.index, budget=phase.budget))
            if any(seq not in replies for seq in range(k * (step - 1) + 1, k * step + 1)):
                # nothing of it was applied: take its id and batch, change nothing
                loop.client.step = step
                loop.epoch, loop.batch = epoch, batch + 1
                continue
            lr = loop.plan.lr_at(epoch)
            loop.client.set_budget(phase.budget)
            loop.client.set_lr(lr)
            ((x, y),) = batches(loop.train, loop.batch_size, shuffle=True, seed=loop.seed, epoch=epoch, start=batch,
                                max_batches=batch + 1)
            loop.step(x, y, epoch, batch, phase.index, phase.budget, lr, transport)
            n += 1
    finally:
        loop.metrics = metrics
        loop.client.grad_key = grad_key
        loop._put(force=True)
    return n
