"""The one training loop: what a client does, step by step and directive by directive.

The local trainer runs it in-process (in-process transport, the scheduler's core called
directly); the cluster runs it on each client's compute thread in a client actor (Ray
shard transport, the scheduler actor). Nothing else drives a split step.

One step (:func:`train_step`)::

    client.forward (head, compressor, encode) -> transport.exchange (the server decodes,
    steps, encodes) -> client.backward (decode, backward, optimizer step) -> StepRow

The loop (:meth:`ClientLoop.run`) asks the scheduler for a directive, does it, and reports
back an :class:`~raysplit.budget.policies.Observation` (with the states the directive
asked for) until the directive is "done".
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Generator, Protocol

from raysplit.budget.policies import AGGREGATE, DONE, EVALUATE, TRAIN, Directive, Observation
from raysplit.data import ArrayDataset, batches
from raysplit.identity import Identity
from raysplit.link.timing import LinkTiming
from raysplit.records.rows import EvalRow, StepRow
from raysplit.training.client import SplitClient
from raysplit.training.guards import NonFiniteError, SkippedStep
from raysplit.training.methods import Plan
from raysplit.training.state import tensor_bytes
from raysplit.transport.base import Transport


class InjectedFault(RuntimeError):
    """Raised by the fault-injection test hook (``--inject-fault CLIENT:EPOCH``)."""


@dataclass(frozen=True)
class Report:
    """What a client hands the scheduler after a directive.

    Args:
        obs: what it did (all a policy sees).
        state: states the directive asked for: {"modules": ...} for averaging or saving,
            {"checkpoint": ...} to resume from.
        seq: the sequence number of the directive it answers (a scheduler that restarted
            and sees a report twice ignores the second).
    """

    obs: Observation
    state: dict | None = None
    seq: int = 0


class Scheduler(Protocol):
    def next(self, client: int, report: Report | None) -> Directive:
        """Report the last directive's outcome (None at the start); get the next one."""
        ...


class RecordSink(Protocol):
    def put(self, items: list) -> None:
        """Hand over rows (StepRow, EvalRow) for the run directory."""
        ...


@dataclass(frozen=True)
class ClientResult:
    """What a client's loop returns when the schedule is done."""

    client: int
    steps: int
    samples: int
    final_filter: list[float] | None


def train_step(client: SplitClient, transport: Transport, x, y, *, lr: float, phase: int,
               compute: Callable[[], ContextManager] = contextlib.nullcontext) -> tuple[Any, dict, dict]:
    """One split step. Returns (the transport's Exchange, the client's regulariser values,
    the timing of the client's parts in seconds). ``compute`` wraps the client's own
    computation (the CPU cap counts only that). A client with a protocol of its own
    (U-shaped training: ``training/ushaped.py``) runs its ``exchange_step``."""
    own = getattr(client, "exchange_step", None)
    if own is not None:
        return own(transport, x, y, lr=lr, phase=phase, compute=compute)
    t0 = time.perf_counter()
    with compute():
        up = client.forward(x, y)
    t1 = time.perf_counter()
    try:
        ex = transport.exchange(up, lr=lr, phase=phase)
    except BaseException:
        client.abort_step()
        raise
    t2 = time.perf_counter()
    with compute():
        reg = client.backward(ex.grad)
    t3 = time.perf_counter()
    return ex, reg, {"forward_s": t1 - t0, "exchange_s": t2 - t1, "backward_s": t3 - t2}


def evaluate(client: SplitClient, transport: Transport, test: ArrayDataset, batch_size: int) -> tuple[int, int, int]:
    """Split inference over ``test``: (correct, total, bytes sent up)."""
    own = getattr(client, "evaluate_on", None)
    if own is not None:
        return own(transport, test, batch_size)
    correct = total = nbytes = 0
    for x, y in batches(test, batch_size, shuffle=False, seed=0):
        inf = transport.infer(client.predict_message(x))
        nbytes += inf.bytes_up
        correct += int((inf.predictions == y).sum())
        total += len(y)
    return correct, total, nbytes


#: What a directive's generator (:meth:`ClientLoop.steps_of`) yields after each training
#: step's computation: the arguments of ``Transport.settle`` (times, samples, slept); it is
#: sent back the settled :class:`~raysplit.link.timing.LinkTiming` (or None).
SettleRequest = tuple[dict, int, float]
Steps = Generator[SettleRequest, "LinkTiming | None", Any]


def drive(steps: Steps, settle: Callable[..., "LinkTiming | None"]) -> Any:
    """Run a directive's generator to its end, settling each step with ``settle`` on the
    spot; its return value."""
    try:
        request = next(steps)
        while True:
            request = steps.send(settle(*request))
    except StopIteration as done:
        return done.value


class _NoCap:
    def compute(self) -> ContextManager:
        return contextlib.nullcontext()

    def pace(self) -> float:
        return 0.0


@dataclass
class ClientLoop:
    """Everything one client's loop needs.

    Args:
        client: the client half.
        train, test: its training partition and its evaluation share.
        plan: the run's plan (stages and filter resets by phase).
        transport: how its messages reach its shard.
        scheduler: where directives come from.
        sink: where its rows go.
        identity: the run's identity.
        shard: the shard it trains against (recorded).
        batch_size, seed: batching (the order depends only on seed and epoch; how many steps
            an epoch has is the policy's: its directives say which).
        t0: the run's start (``time.time()``), so rows carry seconds since it.
        cap: CPU cap (``compute()`` context, ``pace()`` between steps); None = uncapped.
        metrics: a ``Recorder`` (Prometheus); None = none.
        fail_at_epoch: test hook: raise InjectedFault when training this epoch.
        flush_seconds: hand step rows to the sink at least this often.
        on_nonfinite: NaN/Inf in a step's loss, activation or gradient: "skip" the step
            (nothing is applied; a SkippedStep record and a metric say so) or "stop" the
            client (the error fails it).
        recovery_point: called with the loop's full state after each evaluation (the
            state a restarted client resumes from); None = not kept.
        recovery_bytes: also hand over a recovery point once this many gradient bytes came
            back since the last one (what bounds the shard's log of this client's replies;
            0 = only after evaluations).
        recovery_min_bytes: after an evaluation, hand over a point only once this many
            gradient bytes came back since the last one (0 = after every evaluation; None =
            the point's own size: a point exists to let the shard trim its log of this
            client's replies, and one bigger than that log costs more than it saves; a
            client with a few small steps an epoch then replays its log from an older point).
            A directive that loaded a state (an average) always hands one over after it:
            that change is in no log.
    """

    client: SplitClient
    train: ArrayDataset
    test: ArrayDataset
    plan: Plan
    transport: Transport
    scheduler: Scheduler
    sink: RecordSink
    identity: Identity
    shard: int
    batch_size: int
    seed: int
    t0: float
    cap: Any = None
    metrics: Any = None
    fail_at_epoch: int | None = None
    flush_seconds: float = 1.0
    on_nonfinite: str = "skip"
    recovery_point: Callable[[dict], None] | None = None
    recovery_bytes: int = 0
    recovery_min_bytes: int | None = 0
    _since_point: int = 0
    _point_bytes: int = 0
    epoch: int = -1
    batch: int = 0
    seq: int = 0
    samples: int = 0
    _rows: list = field(default_factory=list)
    _last_put: float = 0.0

    @property
    def id(self) -> int:
        return self.client.client_id

    def run(self) -> ClientResult:
        """Walk the schedule until the scheduler says done."""
        report = None
        try:
            while True:
                d = self.scheduler.next(self.id, report)
                if d.kind == DONE:
                    break
                report = self.do(d)
        finally:
            self._put(force=True)
            self.transport.close()
        return self.result()

    def do(self, d: Directive) -> Report:
        """One directive (not done); its report. Virtual clients (``runtime/virtual.py``)
        call this with the client materialised for just this directive."""
        return drive(self.steps_of(d), self.transport.settle)

    def steps_of(self, d: Directive) -> Steps:
        """``do(d)`` as a generator that pauses after each training step's computation,
        before the step is settled on the emulated link's clock: it yields the arguments of
        ``transport.settle`` and is sent its result. Between its pauses it needs the client
        half; during them it needs nothing, so a virtual client under the virtual clock
        gives its slot back while the medium settles the step (``runtime/virtual.py``)."""
        self.seq = d.seq
        self.transport.align(d.resume_at)  # a barrier aligns the emulated clocks
        try:
            if d.kind == TRAIN:
                report = yield from self.segment_steps(d)
            elif d.kind == AGGREGATE:
                report = Report(Observation(self.id, AGGREGATE, d.epoch, sim_time=self.transport.sim_clock()),
                                {"modules": self.client.modules_state()})
            elif d.kind == EVALUATE:
                report = self.evaluate_epoch(d)
            else:
                raise ValueError(f"client {self.id}: cannot do a {d.kind!r} directive")
        finally:
            self._put(force=True)
        return dataclasses.replace(report, seq=d.seq)

    def result(self) -> ClientResult:
        f = self.client.filter_values()
        return ClientResult(self.id, self.client.step, self.samples, None if f is None else [float(v) for v in f])

    # -- directives -------------------------------------------------------------
    def train_segment(self, d: Directive) -> Report:
        return drive(self.segment_steps(d), self.transport.settle)

    def segment_steps(self, d: Directive) -> Steps:
        c = self.client
        if self.fail_at_epoch == d.epoch:
            raise InjectedFault(f"client {self.id}: injected fault at epoch {d.epoch}")
        if d.load_state is not None:  # the last average, for a client that sat out rounds
            c.load_modules_state(resolve_state(d.load_state))
            if self.recovery_point is not None:  # a restart must not replay from before it
                self._recovery_point(self.state_dict())
        start, stop = d.steps
        if d.epoch == self.epoch and start < self.batch <= stop:
            start = self.batch  # a restarted client replayed the first steps of this segment
        elif d.enter_phase:
            self.enter_phase(d)
        c.set_budget(d.budget)
        c.set_lr(d.lr)
        it = batches(self.train, self.batch_size, shuffle=True, seed=self.seed, epoch=d.epoch,
                     max_batches=stop, start=start)  # the policy's steps are within the epoch
        t_seg, sim0 = time.perf_counter(), self.transport.sim_clock()
        lat, n, loss_sum, up, down = [], 0, 0.0, 0, 0
        link = dict.fromkeys(("compute_s", "uplink_s", "downlink_s", "latency_s", "wire_bytes_up", "wire_bytes_down"), 0)
        self.epoch = d.epoch
        for i, (x, y) in enumerate(it, start=start):
            try:
                row = yield from self.step_steps(x, y, d.epoch, i, d.phase, d.budget, d.lr, self.transport)
            except NonFiniteError as e:
                if self.on_nonfinite != "skip":
                    raise
                self._skip(e, d.epoch, i, len(y))
                continue
            lat.append(row.latency)
            n += row.samples
            loss_sum += row.loss * row.samples
            up += row.bytes_up
            down += row.bytes_down
            self._since_point += row.bytes_down
            if self.recovery_point is not None and 0 < self.recovery_bytes <= self._since_point:
                self._recovery_point(self.state_dict())
            for k in link:
                link[k] += getattr(self.last_timing, k)
            self._put()
        self._put(force=True)
        obs = Observation(
            self.id, TRAIN, d.epoch, steps=len(lat), samples=n, seconds=time.perf_counter() - t_seg,
            step_seconds=statistics.median(lat) if lat else float("nan"), bytes_up=up, bytes_down=down,
            loss=loss_sum / n if n else float("nan"), sim_time=self.transport.sim_clock(),
            sim_seconds=self.transport.sim_clock() - sim0, **link,
        )
        return Report(obs)

    def step(self, x, y, epoch: int, batch: int, phase: int, budget: int, lr: float, transport: Transport) -> StepRow:
        """One training step of batch ``batch`` of ``epoch`` through ``transport``; records
        and returns its row."""
        return drive(self.step_steps(x, y, epoch, batch, phase, budget, lr, transport), transport.settle)

    def step_steps(self, x, y, epoch: int, batch: int, phase: int, budget: int, lr: float,
                   transport: Transport) -> Steps:
        """``step`` as a generator: one pause, between the computation and the settling."""
        c = self.client
        cap = self.cap or _NoCap()
        t = time.perf_counter()
        ex, reg, times = train_step(c, transport, x, y, lr=lr, phase=phase, compute=cap.compute)
        slept = cap.pace()
        latency = time.perf_counter() - t
        # the emulated link's cost of the step (neutral without one): kept for the segment's sums
        lt = self.last_timing = (yield (times, len(y), slept)) or LinkTiming.neutral(
            times["forward_s"] + times["backward_s"], ex.bytes_up, ex.bytes_down)
        c = self.client  # a virtual client may be back on another slot
        res = ex.reply.result
        row = StepRow(
            run=self.identity.run, tenant=self.identity.tenant, client=self.id, shard=self.shard,
            epoch=epoch, batch=batch, step=c.step, phase=phase, budget=budget, lr=lr,
            samples=len(y), bytes_up=ex.bytes_up, bytes_down=ex.bytes_down, loss=res.loss,
            prune_loss=reg.get("prune", 0.0), correct=res.correct, time=time.time() - self.t0,
            latency=latency, queue_s=ex.reply.queue_s, server_s=res.compute_s, merged=res.merged, **times,
            **lt.columns(),
        )
        self._rows.append(row)
        if self.metrics is not None:
            self.metrics.step(str(self.id), tenant=self.identity.tenant, bytes_up=ex.bytes_up,
                              bytes_down=ex.bytes_down, samples=len(y), latency_s=latency, loss=res.loss)
            if lt.sim_time == lt.sim_time:  # an emulated link
                self.metrics.link(str(self.id), tenant=self.identity.tenant, uplink_s=lt.uplink_s,
                                  downlink_s=lt.downlink_s, wire_up=lt.wire_bytes_up,
                                  wire_down=lt.wire_bytes_down, sim_time=lt.sim_time)
        self.epoch, self.batch = epoch, batch + 1
        self.samples += len(y)
        return row

    def _skip(self, e: NonFiniteError, epoch: int, batch: int, samples: int) -> None:
        """--on-nonfinite skip: nothing of the step was applied; say so (a record, a metric,
        a log line) and go on with the next batch."""
        rec = SkippedStep(self.identity.run, self.identity.tenant, self.id, epoch, batch, self.client.step, samples,
                          e.where, str(e))
        self._put(force=True)
        self.sink.put([rec])
        if self.metrics is not None:
            self.metrics.nonfinite(str(self.id), e.where, "skip", tenant=self.identity.tenant)
        print(f"[raysplit] client {self.id}: step {rec.step} (epoch {epoch}, batch {batch}) skipped: {e}", flush=True)
        self.epoch, self.batch = epoch, batch + 1

    def enter_phase(self, d: Directive) -> None:
        """A new phase: its stage, and its filter reset (resetPrune/resetdePrune)."""
        phase = self.plan.phases[d.phase]
        self.client.set_stage(phase.stage)
        if phase.reset is not None:
            prev = self.plan.phases[d.phase - 1].budget
            self.client.reset_filter(phase.reset, prev, seed=self.seed + d.epoch)

    def evaluate_epoch(self, d: Directive) -> Report:
        if d.load_state is not None:
            self.client.load_modules_state(resolve_state(d.load_state))
        self.client.set_budget(d.budget)
        t = time.perf_counter()
        correct, total, nbytes = evaluate(self.client, self.transport, self.test, self.batch_size)
        row = EvalRow(
            run=self.identity.run, tenant=self.identity.tenant, client=self.id, epoch=d.epoch, phase=d.phase,
            budget=d.budget, lr=d.lr, correct=correct, total=total, bytes_up=nbytes,
            seconds=time.perf_counter() - t, time=time.time() - self.t0,
        )
        self.sink.put([row])
        if self.metrics is not None and total:
            self.metrics.accuracy(str(self.id), correct / total, tenant=self.identity.tenant)
        state: dict = {}
        if "model" in d.collect:
            state["modules"] = self.client.modules_state()
        point = self.recovery_point is not None and (d.load_state is not None or self._point_due())
        full = self.state_dict() if ("checkpoint" in d.collect or point) else None
        if "checkpoint" in d.collect:
            state["checkpoint"] = full
        if point:
            self._recovery_point(full)
        obs = Observation(self.id, EVALUATE, d.epoch, seconds=row.seconds, bytes_up=nbytes, correct=correct,
                          total=total, sim_time=self.transport.sim_clock())
        return Report(obs, state or None)

    def _point_due(self) -> bool:
        """After an evaluation: whether the log since the last point is worth a point
        (``recovery_min_bytes``)."""
        if self.recovery_min_bytes is not None:
            return self._since_point >= self.recovery_min_bytes
        if not self._point_bytes or self.client.step <= 1:  # momentum buffers appear with the first step
            self._point_bytes = tensor_bytes(self.client.state_dict())
        return self._since_point >= self._point_bytes

    def _recovery_point(self, state: dict) -> None:
        self._put(force=True)  # the rows up to it are on their way before the point is
        self.recovery_point(state)
        self._since_point = 0

    # -- records ----------------------------------------------------------------
    def _put(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._rows and (force or now - self._last_put >= self.flush_seconds):
            rows, self._rows = self._rows, []
            self.sink.put(rows)
            self._last_put = now

    # -- state ------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The client's full state and where it is in the data: the epoch of the last
        directive, the next batch of it, the directive's sequence number."""
        state = {"client": self.client.state_dict(), "epoch": self.epoch, "batch": self.batch, "seq": self.seq,
                 "samples": self.samples}
        if hasattr(self.transport, "state_dict"):  # an emulated link's clock
            state["transport"] = self.transport.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.client.load_state_dict(state["client"])
        self.epoch, self.batch, self.seq = int(state["epoch"]), int(state["batch"]), int(state["seq"])
        self.samples = int(state["samples"])
        if "transport" in state and hasattr(self.transport, "load_state_dict"):
            self.transport.load_state_dict(state["transport"])


def resolve_state(value: Any) -> Any:
    """A state handed over directly, or as a Ray object reference (fetched once)."""
    try:
        import ray

        if isinstance(value, ray.ObjectRef):
            return ray.get(value)
    except ImportError:  # pragma: no cover - ray is a dependency
        pass
    return value
