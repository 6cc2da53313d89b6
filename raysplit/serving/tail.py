"""The server's half of split inference, without Ray: messages in, predictions out.

:class:`TailService` answers a batch of requests (codec messages) at once: it decodes each
on its own (so a malformed, forged or foreign message fails alone), groups them by the
tail that serves them (a prune run's budget, a cut layer, or the one tail), and runs each
group through its tail as one batch. A Ray Serve replica (``serving.app``) is a thin
wrapper around one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from raysplit import codec
from raysplit.serving.model import Served, load_served

__all__ = ["Answer", "TailService"]


@dataclass(frozen=True)
class Answer:
    """The answer to one request.

    Args:
        predictions: int64 (N,) classes, or None when the request failed.
        error: why it failed (None when it did not).
        received: channels (or, for cut models, values per sample) that arrived.
        budget: the budget the request carried (slices, channels or cut layer).
        complete: whether the whole message arrived (False: a channel-major message cut short).
    """

    predictions: np.ndarray | None
    error: str | None = None
    received: int = 0
    budget: int = 0
    complete: bool = True

    def to_dict(self) -> dict:
        return {"predictions": None if self.predictions is None else self.predictions.tolist(), "error": self.error,
                "received": self.received, "budget": self.budget, "complete": self.complete}


class TailService:
    """Args:
    source: a model file or run directory (``serving.model.load_served``), or a Served.
    variant: which model of a run directory (default: see load_served).
    device: "cpu", "cuda" or "auto".
    key: HMAC key every request must be tagged with (None: tags are not required).
    threads: torch threads for this service (None: leave as is). Set again in the thread that
        answers, when it differs: torch's thread count is per calling thread under OpenMP, and a
        Ray Serve replica answers on a thread other than the one that built the service (there
        the tail ran with the machine's default, several threads per replica on shared cores).
    """

    def __init__(self, source, *, variant: str | None = None, device: str = "cpu", key: bytes | None = None,
                 threads: int | None = None) -> None:
        self.threads = None if threads is None else int(threads)
        self._use_threads()
        self.served = source if isinstance(source, Served) else load_served(source, variant=variant, device=device)
        self.key = key
        self.requests = 0
        self.failed = 0

    @property
    def kind(self) -> str:
        return self.served.kind

    def _route(self, m: codec.Message) -> tuple[object, int]:
        """(the group this message runs in, its budget)."""
        s = self.served
        if s.kind == "slices":
            return 0, m.slices_received
        if s.kind == "cut":
            s.check_budget(m.cut)
            return m.cut, m.cut
        b = len(m.indices_sent)
        if s.per_budget:
            s.check_budget(b)
            return b, b
        return 0, b

    def _use_threads(self) -> None:
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    @torch.no_grad()
    def predict(self, buffers: list[bytes]) -> list[Answer]:
        """One answer per message, in order."""
        self._use_threads()
        answers: list[Answer | None] = [None] * len(buffers)
        groups: dict[object, list[tuple[int, codec.Message, int]]] = {}
        for i, buf in enumerate(buffers):
            try:
                m = codec.decode(buf, key=self.key)
                if m.kind != codec.KIND_ACTIVATION:
                    raise ValueError(f"message of kind {m.kind} is not an activation")
                if self.served.kind == "slices" and m.layout != "channel":
                    raise ValueError("this NAIR model takes channel-major messages (its slices)")
                group, budget = self._route(m)
                groups.setdefault(group, []).append((i, m, budget))
            except ValueError as e:  # CodecError is a ValueError
                answers[i] = Answer(None, f"{type(e).__name__}: {e}")
        for group, items in groups.items():
            try:
                preds = self._run(group, [m for _, m, _ in items])
            except (ValueError, RuntimeError) as e:
                if len(items) == 1:
                    i, _, b = items[0]
                    answers[i] = Answer(None, f"{type(e).__name__}: {e}", budget=b)
                    continue
                for i, m, b in items:  # one bad message must not fail the others: retry one by one
                    try:
                        (p,) = self._run(group, [m])
                        answers[i] = Answer(p, None, _received(m), b, m.complete)
                    except (ValueError, RuntimeError) as e1:
                        answers[i] = Answer(None, f"{type(e1).__name__}: {e1}", budget=b)
                continue
            for (i, m, b), p in zip(items, preds):
                answers[i] = Answer(p, None, _received(m), b, m.complete)
        self.requests += len(buffers)
        self.failed += sum(a.error is not None for a in answers)
        return answers  # type: ignore[return-value]

    def _run(self, group, msgs: list[codec.Message]) -> list[np.ndarray]:
        s = self.served
        if s.kind == "cut":
            _, tail = s.halves(group)
            server = s.model.server
            for m in msgs:
                if m.tenant != server.tenant_key:
                    raise ValueError(f"message of tenant key {m.tenant}; this service serves {server.tenant_key}")
                if not m.complete:
                    raise ValueError("a message cut after layer %d arrived incomplete" % m.cut)
            x = torch.cat([torch.from_numpy(m.values) for m in msgs]).to(server.device)
            pred = tail.to(server.device)(x).argmax(1).cpu().numpy().astype(np.int64)
            bounds = np.cumsum([0] + [m.shape[0] for m in msgs])
            return [pred[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        model = s.models[group] if s.per_budget else s.model
        return model.server.predict_messages(msgs)


def _received(m: codec.Message) -> int:
    return int(m.values.shape[1])
