"""The client's half of split inference: the served model's head (and compression module),
the client's link, and the budget each request carries.

An :class:`EdgeClient` turns an input into a :class:`Request`: the bytes the server receives
and when they arrive. Its budget is fixed (``budget=``) or chosen per request from its link
and a deadline (``deadline=``):

* slices (NAIR): the client sends the whole channel-major message and the server takes
  the slices that arrived by the deadline (the link decides; the codec decodes any prefix
  that ends on a slice);
* channels (the compression module): the largest served budget whose message the link
  should deliver in time, estimated from the link's rate when the request leaves (a
  fading or replayed link may then deliver it late: the request is marked late);
* cut (no module): the earliest cut whose message should arrive in time, so the device
  computes as little as the link allows; the server runs the rest.

The link is ``raysplit.link``'s, as in the edge emulation of training: capacity process,
packet framing, one-way delay, jitter and loss.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from raysplit import codec
from raysplit.compression.slices import slice_message, truncate_slices
from raysplit.link.medium import ClientLink
from raysplit.link.packets import wire_bytes
from raysplit.link.spec import LinkSpec, parse_link
from raysplit.serving.deadline import in_time, prefix_arrivals, units_by_deadline
from raysplit.serving.model import Served

__all__ = ["Request", "EdgeClient"]


@dataclass(frozen=True)
class Request:
    """One request as the server receives it.

    Args:
        message: the bytes that arrived (a channel-major message may be a prefix).
        budget: what it carries: slices received, channels B, or the cut layer.
        sent_bytes: bytes that crossed the link for it (the prefix that arrived, for slices).
        compute_s: the client's compute (head, module, codec), measured.
        uplink_s: from the first byte sent to the last needed arriving (emulated link).
        downlink_s: the answer's way back (its one-way delay; an answer is a few bytes).
        on_time: whether what the server needs arrived by the deadline (True without one).
        usable: False when nothing usable arrived (no slice by the deadline): no answer.
    """

    message: bytes
    budget: int
    sent_bytes: int
    compute_s: float
    uplink_s: float
    downlink_s: float
    on_time: bool = True
    usable: bool = True


class EdgeClient:
    """Args:
    served: the served model (its client half runs here).
    link: this client's uplink (a ``raysplit.link`` string or LinkSpec).
    client_id: carried in every message; also picks this client's link draws and trace offset.
    deadline: seconds for the uplink; the budget is chosen for it (None: ``budget`` is used).
    budget: a fixed budget (None with a deadline; default without one: the largest).
    seed: the link's seed.
    key: HMAC key to tag messages with.
    """

    def __init__(self, served: Served, link: str | LinkSpec, client_id: int = 0, *, deadline: float | None = None,
                 budget: int | None = None, seed: int = 0, key: bytes | None = None) -> None:
        self.served = served
        self.spec = parse_link(link)
        self.link = ClientLink(client_id, self.spec, seed)
        self.client_id = int(client_id)
        if deadline is not None and not deadline > 0:
            raise ValueError(f"deadline must be > 0 s, got {deadline}")
        if deadline is not None and budget is not None:
            raise ValueError("give a deadline (the budget is then chosen per request) or a fixed budget, not both")
        self.deadline = deadline
        self.budget = served.check_budget(budget) if budget is not None else max(served.budgets())
        self.key = key
        self._sizes: dict[int, int] = {}

    # -- messages ---------------------------------------------------------------
    @torch.no_grad()
    def message(self, x: np.ndarray, budget: int) -> bytes:
        """The whole message for ``x`` at ``budget`` (slices: the full channel-major message)."""
        s = self.served
        x = np.require(x, np.float32, ["C"])
        if s.kind == "slices":
            m = s.model
            return slice_message(m.client, x, m.slices, step=0, key=self.key)
        if s.kind == "cut":
            head, _ = s.halves(budget)
            a = head(torch.from_numpy(x)).numpy()
            c = s.model.client
            return codec.encode(a, None, a.shape, c.codec, cut=budget, tenant=c.tenant_key,
                                client_id=self.client_id, key=self.key)
        c = (s.models[budget] if s.per_budget else s.model).client
        c.modules.eval()
        sel, idx = c.compressor(c.head(torch.from_numpy(x)), budget)  # top-B of the module, as in training
        return codec.encode(sel.numpy(), None if idx is None else idx.numpy(), (len(x), c.channels, *sel.shape[2:]),
                            c.codec, tenant=c.tenant_key, cut=c.cfg.split_layer, client_id=self.client_id,
                            key=self.key)

    def message_size(self, budget: int, n: int = 1) -> int:
        """Bytes of an n-image message at ``budget`` (exact for uncompressed codecs)."""
        s = self.served
        cc = s.model.client.codec
        if cc.compression != "none":
            raise ValueError("message sizes are data-dependent with lz4/zstd; use the message itself")
        keyed = self.key is not None
        if s.kind == "cut":
            if budget not in self._sizes:
                head, _ = s.halves(budget)
                with torch.no_grad():
                    shape = tuple(head(torch.zeros(1, *s.model.split.input_shape)).shape[1:])
                self._sizes[budget] = codec.encoded_size((n, *shape), shape[0], cc, with_labels=False,
                                                         all_channels=True, keyed=keyed)
            return self._sizes[budget]
        wire = s.model.client.wire_shape
        shape = (n, *wire)
        if s.kind == "slices":
            return codec.encoded_size(shape, wire[0], cc, with_labels=False, layout="channel",
                                      slices=s.model.slices.counts, keyed=keyed)
        return codec.encoded_size(shape, budget, cc, with_labels=False, all_channels=budget == wire[0], keyed=keyed)

    # -- budgets ----------------------------------------------------------------
    def estimate_arrival(self, start: float, size: int) -> float:
        """Uplink seconds a message of ``size`` bytes should take, from the link's rate when
        it leaves (what a client can know) and the nominal one-way delay."""
        rate = self.link.capacity["up"].rate_at(start)
        if rate <= 0:
            return math.inf
        return self.spec.delay_s + 8.0 * wire_bytes(size, self.spec.mtu, self.spec.header) / rate

    def choose_budget(self, start: float) -> int:
        """The budget for a request leaving at ``start`` (see the module docstring)."""
        s = self.served
        if self.deadline is None or s.kind == "slices":
            return self.budget
        budgets = s.budgets()
        fits = [b for b in budgets if in_time(self.estimate_arrival(start, self.message_size(b)), self.deadline)]
        if s.kind == "channels":
            return max(fits) if fits else min(budgets)
        if fits:
            return min(fits)  # the earliest cut that fits: the least compute on the device
        return min(budgets, key=self.message_size)

    # -- one request --------------------------------------------------------------
    def request(self, x: np.ndarray, start: float = 0.0) -> Request:
        """Encode ``x`` (one or more images), send it at ``start`` on the link's clock."""
        t0 = time.perf_counter()
        budget = self.choose_budget(start)
        buf = self.message(x, budget)
        compute = time.perf_counter() - t0
        down = self.spec.delay_s
        if self.served.kind == "slices":
            ends = codec.slice_ends(buf)
            arr = prefix_arrivals(self.link, start, ends)
            k = len(ends) - 1
            if self.deadline is None:
                k = budget if budget < k else k
            else:
                k = min(units_by_deadline(arr, self.deadline), budget)
            if k < 1:  # not one slice in time: nothing the tail can use
                return Request(b"", 0, 0, compute, float(self.deadline or arr[-1]), down, False, False)
            return Request(truncate_slices(buf, k), k, int(ends[k]), compute, float(arr[k]), down, True, True)
        arrival = float(prefix_arrivals(self.link, start, [len(buf)])[-1])
        on_time = self.deadline is None or bool(in_time(arrival, self.deadline))
        return Request(buf, budget, len(buf), compute, arrival, down, on_time, True)

