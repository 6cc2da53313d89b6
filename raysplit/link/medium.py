"""The emulated network of one run: every client's access link, the shared cells, the
shards' backhaul and processors, resolved together in simulated or wall time.

Topology. Client c reaches its shard k over three resources per direction: its own
access link (``c<c>:up`` / ``c<c>:down``, capacity from its LinkSpec: constant, fading
or a trace), the cell it is attached to if any (``cell:<name>``, shared by every client
in it: one resource for both directions when half duplex), and shard k's wired backhaul
(``bh<k>:up`` / ``bh<k>:down``, shared by the shard's clients). Shard k's processor
(``srv<k>``, capacity 1 work-second per second) is shared by its clients' server steps.
All of them are resolved by max-min fair sharing (:mod:`raysplit.link.fluid`).

One client's training step is one job::

    uplink flow (wire bits of the activation message; then its one-way latency and ARQ
    feedback) -> server work on srv<k> -> downlink flow (the gradient message; then its
    latency) -> the client's backward compute

starting when its forward compute ends. In **virtual** mode the client submits the whole
step after it has really computed it (so the sizes and measured times are known), and
its simulated clock moves to the job's end.

Virtual time is kept consistent across clients with a conservative rule (as in
Chandy-Misra parallel discrete-event simulation): an event at simulated time t is settled
only when no client can still submit a job that starts before t. Each client not in a
job has a lower bound on its next job's start (its clock); a client in a job submits
nothing until it ends; a client waiting at a barrier of the schedule (``hold``) will
resume at the barrier's time, which is after everything the others still do before it
(``release`` then sets every waiting client's bound to that time); a finished or failed
client (``retire``) never submits again. So the result does not depend on how fast the
clients' processes happen to run: it is a function of the jobs alone.

In **realtime** mode the same network runs on the wall clock: a transfer is submitted
when it happens and the caller sleeps until it ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from raysplit.link.capacity import Constant
from raysplit.link.fluid import FluidNetwork, Job, Stage
from raysplit.link.loss import LossProcess, mathis_rate
from raysplit.link.packets import packet_count, wire_bytes
from raysplit.link.spec import CellSpec, LinkSpec, derive_seed

BACKHAUL_DEFAULT = LinkSpec(name="backhaul", up_bps=10e9, down_bps=10e9, delay_s=0.5e-3, mtu=1538, header=78,
                            source="a 10 Gbit/s wired link with 0.5 ms one way (assumption: a data-centre uplink)")


@dataclass(frozen=True)
class TransferPlan:
    """How one message crosses a client's link.

    Args:
        payload: message bytes.
        wire: bytes on the wire: payload + per-packet headers, every retransmission included.
        packets: packets of one copy of the message.
        transmissions: packets sent in all (>= packets).
        rounds: ARQ rounds (1 without loss).
        latency_s: one-way propagation delay of the path, jitter drawn.
        feedback_s: waiting for the receiver's feedback between ARQ rounds.
        cap_bps: the transfer's own rate limit (TCP's loss-limited rate for goodput mathis).
    """

    payload: int
    wire: int
    packets: int
    transmissions: int
    rounds: int
    latency_s: float
    feedback_s: float
    cap_bps: float


class ClientLink:
    """One client's access link: both directions' capacity, loss and jitter, with
    private seeded generators (its ``state_dict`` is a few numbers per direction).

    Args:
        client: the client id (seeds and trace offsets depend on it).
        spec: the link.
        seed: the run's link seed.
    """

    def __init__(self, client: int, spec: LinkSpec, seed: int) -> None:
        self.client, self.spec, self.seed = client, spec, seed
        self.capacity = {d: spec.capacity(d, client, seed) for d in ("up", "down")}
        self.loss = {d: LossProcess(spec.loss, spec.ge, derive_seed(seed, client, "loss", d)) for d in ("up", "down")}
        self.jitter = np.random.default_rng(derive_seed(seed, client, "jitter"))

    def latency(self) -> float:
        s = self.spec
        if s.jitter_s <= 0:
            return s.delay_s
        return max(0.0, s.delay_s + s.jitter_s * float(self.jitter.standard_normal()))

    def plan(self, direction: str, payload: int, extra_delay_s: float = 0.0) -> TransferPlan:
        """The next message of ``payload`` bytes in ``direction`` (draws its loss and jitter).
        ``extra_delay_s``: one-way delay beyond this link (the backhaul)."""
        s = self.spec
        n = packet_count(payload, s.mtu, s.header)
        once = wire_bytes(payload, s.mtu, s.header)
        latency = self.latency() + extra_delay_s
        rtt = 2.0 * (s.delay_s + extra_delay_s)
        if s.goodput == "mathis":
            p = s.mean_loss()
            return TransferPlan(payload, int(math.ceil(once / (1.0 - p))), n, n, 1 if n else 0, latency, 0.0,
                                mathis_rate(s.mtu - s.header, rtt, p))
        sent = self.loss[direction].send(n)
        wire = once + (int(math.ceil((sent.transmissions - n) * once / n)) if n else 0)
        return TransferPlan(payload, wire, n, sent.transmissions, sent.rounds, latency,
                            max(sent.rounds - 1, 0) * rtt, math.inf)

    def state_dict(self) -> dict:
        return {"loss": {d: p.state_dict() for d, p in self.loss.items()}, "jitter": self.jitter.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        for d, st in state["loss"].items():
            self.loss[d].load_state_dict(st)
        self.jitter.bit_generator.state = state["jitter"]


@dataclass(frozen=True)
class StepTiming:
    """One training step on the simulated (virtual) or wall (realtime) clock.

    Args:
        client: who.
        start: when its uplink began (its forward compute ended).
        up_end, server_end, down_end, end: when the uplink arrived, the server's work
            ended, the downlink arrived, the client's backward ended.
        wire_up, wire_down: bytes on the wire each way.
        up_bps, down_bps: the client's link capacity when each transfer began.
        latency_s: propagation delays and ARQ feedback waits of both transfers.
        rounds_up, rounds_down: ARQ rounds.
    """

    client: int
    start: float
    up_end: float
    server_end: float
    down_end: float
    end: float
    wire_up: int
    wire_down: int
    up_bps: float
    down_bps: float
    latency_s: float
    rounds_up: int = 1
    rounds_down: int = 1


class Medium:
    """The network of one run, and the rule that keeps its simulated time consistent.

    Args:
        links: {client: its LinkSpec}.
        shard_of: {client: the shard it trains against}.
        cells: {name: CellSpec} of the shared media clients may be attached to
            (``LinkSpec.cell`` names one; an unknown name is an error).
        backhaul: each shard's wired link (one per shard, both directions).
        seed: the link seed (loss, jitter and fading draws).
        shard_work: model the shards' processors as shared resources (virtual mode).
    """

    def __init__(self, links: dict[int, LinkSpec], shard_of: dict[int, int], cells: dict[str, CellSpec] | None = None,
                 *, backhaul: LinkSpec = BACKHAUL_DEFAULT, seed: int = 0, shard_work: bool = True) -> None:
        cells = dict(cells or {})
        self.clients = sorted(links)
        self.specs, self.shard_of, self.backhaul = dict(links), dict(shard_of), backhaul
        self.links = {c: ClientLink(c, s, seed) for c, s in links.items()}
        self.cell_of: dict[int, CellSpec | None] = {}
        resources: dict = {}
        for c, spec in links.items():
            for d in ("up", "down"):
                resources[f"c{c}:{d}"] = self.links[c].capacity[d]
            if spec.cell is not None:
                if spec.cell not in cells:
                    raise ValueError(f"client {c}'s link attaches to cell {spec.cell!r}, which is not defined "
                                     f"(cells: {', '.join(cells) or 'none'})")
                self.cell_of[c] = cells[spec.cell]
            else:
                self.cell_of[c] = None
        self.cells = {name: cells[name] for name in sorted({cl.name for cl in self.cell_of.values() if cl})}
        for cell in self.cells.values():
            res = cell.resources()
            resources[res["up"]] = Constant(cell.up_bps)
            resources[res["down"]] = Constant(cell.down_bps if cell.duplex == "full" else cell.up_bps)
        self.shards = sorted(set(self.shard_of.values()))
        for k in self.shards:
            resources[f"bh{k}:up"] = Constant(backhaul.up_bps)
            resources[f"bh{k}:down"] = Constant(backhaul.down_bps)
            if shard_work:
                resources[f"srv{k}"] = Constant(1.0)
        self.shard_work = shard_work
        self.net = FluidNetwork(resources)
        # the conservative rule: clock lower bounds of the clients not in a job
        self.bound = {c: 0.0 for c in self.clients}
        self.in_job: dict[int, int] = {}  # client -> job id
        self.held: set[int] = set()
        self.retired: set[int] = set()
        self.results: dict[int, StepTiming] = {}  # client -> its finished step, until taken

    # -- topology -----------------------------------------------------------------
    def path(self, client: int, direction: str) -> tuple[str, ...]:
        cell = self.cell_of[client]
        k = self.shard_of[client]
        return (f"c{client}:{direction}", *((cell.resources()[direction],) if cell else ()), f"bh{k}:{direction}")

    def medium_names(self) -> list[str]:
        """The shared resources worth watching: cells and backhauls."""
        names = []
        for cell in self.cells.values():
            names += sorted(set(cell.resources().values()))
        return names + [f"bh{k}:{d}" for k in self.shards for d in ("up", "down")]

    def _flow(self, client: int, direction: str, payload: int) -> tuple[Stage, TransferPlan]:
        plan = self.links[client].plan(direction, payload, self.backhaul.delay_s)
        stage = Stage("flow", plan.wire * 8.0, self.path(client, direction), cap=plan.cap_bps,
                      then=plan.latency_s + plan.feedback_s)
        return stage, plan

    def capacity_now(self, client: int, direction: str, t: float) -> float:
        """The client's access capacity at t, bit/s (what its StepRow reports)."""
        return float(self.links[client].capacity[direction].rate_at(t))

    # -- virtual mode ---------------------------------------------------------------
    def submit_step(self, client: int, start: float, up_bytes: int, server_s: float, down_bytes: int,
                    after_s: float) -> None:
        """Client ``client``'s next step, its uplink starting at simulated time ``start``;
        ``server_s``: the server's work (seconds on an unshared processor), ``after_s``:
        the client's compute after the downlink. Settled by :meth:`progress`."""
        if client in self.retired:
            raise RuntimeError(f"client {client} was retired from the medium")
        if client in self.in_job:
            raise RuntimeError(f"client {client} submitted a step while its previous one is still open")
        if start < self.bound.get(client, 0.0) - 1e-9:
            raise ValueError(f"client {client}'s step starts at {start:.6f} s, before its clock {self.bound[client]:.6f} s")
        up, pu = self._flow(client, "up", up_bytes)
        down, pd = self._flow(client, "down", down_bytes)
        k = self.shard_of[client]
        server = Stage("flow", server_s, (f"srv{k}",)) if self.shard_work else Stage("wait", server_s)
        stages = [up, server, down, Stage("wait", after_s)]
        job = self.net.submit(client, start, stages, tag=(pu, pd))
        self.in_job[client] = job.id
        self.held.discard(client)

    def safe_time(self) -> float:
        """Every event up to this simulated time can be settled: no client can still
        start a job before it."""
        free = [self.bound[c] for c in self.clients if c not in self.in_job and c not in self.held
                and c not in self.retired]
        return min(free, default=math.inf)

    def progress(self) -> list[StepTiming]:
        """Settle what is safe; returns the steps that ended (their clients' clocks move
        to their ends)."""
        out = []
        while True:  # a client whose step ends may act again from its end on: re-check what is safe
            ended = self.net.advance(self.safe_time(), stop_at_finish=True)
            if not ended:
                return out
            for job in ended:
                t = self._timing(job)
                self.in_job.pop(job.client, None)
                self.bound[job.client] = t.end
                self.results[job.client] = t
                out.append(t)

    def _timing(self, job: Job) -> StepTiming:
        pu, pd = job.tag
        e = job.ends
        c = job.client
        return StepTiming(c, job.start, e[0], e[1], e[2], e[3], pu.wire, pd.wire,
                          self.capacity_now(c, "up", job.start), self.capacity_now(c, "down", e[1]),
                          pu.latency_s + pu.feedback_s + pd.latency_s + pd.feedback_s, pu.rounds, pd.rounds)

    def take(self, client: int) -> StepTiming | None:
        """The client's finished step, once (None while it is still open)."""
        return self.results.pop(client, None)

    def hold(self, client: int) -> None:
        """The client waits at a barrier of the schedule: it will resume at the barrier's
        time, after everything the others still do before it."""
        if client not in self.retired:
            self.held.add(client)

    def release(self, clients, t: float) -> None:
        """A barrier passed at simulated time ``t``: its clients resume there."""
        for c in clients:
            if c in self.retired:
                continue
            self.held.discard(c)
            if c not in self.in_job:
                self.bound[c] = max(self.bound[c], float(t))

    def retire(self, client: int) -> None:
        """The client is done (or failed): it will never submit again."""
        self.retired.add(client)
        self.held.discard(client)
        if client in self.in_job:
            self.net.cancel(client)
            del self.in_job[client]

    # -- realtime mode -------------------------------------------------------------
    def start_transfer(self, client: int, direction: str, payload: int, now: float) -> tuple[int, TransferPlan]:
        """A transfer that begins now (wall clock); returns (job id, its plan). The
        network must have been advanced to ``now`` first."""
        stage, plan = self._flow(client, direction, payload)
        job = self.net.submit(client, max(now, self.net.now), [stage], tag=plan)
        return job.id, plan

    # -- state ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Link draws and clocks; the network must be idle (no open job), as it is at
        any checkpoint the schedule takes (every client evaluated)."""
        if self.net.busy():
            raise RuntimeError("the medium has transfers in flight; checkpoint it between steps")
        return {"links": {c: ln.state_dict() for c, ln in self.links.items()}, "bound": dict(self.bound),
                "now": self.net.now, "retired": sorted(self.retired)}

    def load_state_dict(self, state: dict) -> None:
        for c, st in state["links"].items():
            self.links[int(c)].load_state_dict(st)
        self.bound = {int(c): float(t) for c, t in state["bound"].items()}
        self.net.now = float(state["now"])
        self.retired = set(int(c) for c in state["retired"])
        self.held, self.in_job, self.results = set(), {}, {}


def transfer_time(spec: LinkSpec, payload: int, *, direction: str = "up", start: float = 0.0, seed: int = 0,
                  client: int = 0) -> tuple[float, TransferPlan]:
    """Seconds for one message of ``payload`` bytes over ``spec`` alone (no other
    traffic, no backhaul), beginning at ``start``: its wire bits through the link's
    capacity as it moves over time, then the one-way latency and ARQ feedback. For
    callers that need one link's answer (deadline-bound sending, energy per cut)."""
    link = ClientLink(client, spec, seed)
    plan = link.plan(direction, payload)
    net = FluidNetwork({"l": link.capacity[direction]})
    net.now = start
    net.submit(client, start, [Stage("flow", plan.wire * 8.0, ("l",), cap=plan.cap_bps,
                                     then=plan.latency_s + plan.feedback_s)])
    (job,) = net.advance(math.inf)
    return job.end - start, plan
