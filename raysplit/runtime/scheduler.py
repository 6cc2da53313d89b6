"""Budget scheduler actor: owns the schedule and every client's progress.

The policy (``raysplit.scheduling``) is pure; this actor only serialises access to it,
logs transitions and exports the budget gauges.
"""

from __future__ import annotations

import logging
import time

import ray

from raysplit.observability.metrics import Recorder
from raysplit.budget.schedule import Schedule
from raysplit.scheduling import Assignment, make_policy

log = logging.getLogger("raysplit.scheduler")


class BudgetScheduler:
    def __init__(self, schedule: Schedule, clients: list[int], policy: str = "sync") -> None:
        self.policy = make_policy(policy, schedule, clients)
        self.metrics = Recorder()
        self.t0 = time.time()
        self.log: list[dict] = []
        self.failed: dict[int, str] = {}
        a = self.policy.assignment(clients[0])
        for c in clients:
            self.metrics.budget(f"client{c}", a.budget)

    def assignment(self, client: int) -> Assignment:
        if client in self.failed:
            return Assignment(None)
        return self.policy.assignment(client)

    def epoch_done(self, client: int, epoch: int) -> bool:
        n_before = len(self.policy.transitions)
        advanced = self.policy.epoch_done(client, epoch)
        for t in self.policy.transitions[n_before:]:
            rec = {**t.__dict__, "time": time.time() - self.t0}
            self.log.append(rec)
            self.metrics.transition()
            targets = self.policy.clients if t.client is None else [t.client]
            for c in targets:
                self.metrics.budget(f"client{c}", t.to_budget)
            who = "all clients" if t.client is None else f"client {t.client}"
            msg = f"budget transition at epoch {t.epoch}: {t.from_budget} -> {t.to_budget} (lr {t.lr:g}) for {who}"
            log.info(msg)
            print(f"[raysplit.scheduler] {msg}", flush=True)
        return advanced

    def client_failed(self, client: int, error: str) -> None:
        self.failed[client] = error
        self.policy.drop(client)

    def transitions(self) -> list[dict]:
        return list(self.log)

    def progress(self) -> dict[int, int]:
        return self.policy.progress()


SchedulerActor = ray.remote(BudgetScheduler)
