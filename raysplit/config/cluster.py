"""Configuration of a cluster run (on top of the training configuration)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from raysplit.config.train import TrainConfig
from raysplit.runtime.cpu_cap import MECHANISMS, check_cap
from raysplit.scheduling import POLICIES

MODES = ("independent", "splitfed")
SHARD_SYNC = ("average", "allreduce")
PARTITIONS = ("iid", "dirichlet")
MALLOC_MODES = ("auto", "lean", "fast")


@dataclass(frozen=True)
class ClusterConfig:
    """A multi-client split-learning run on Ray.

    Args:
        train: the training run (model, data, schedule, codec, batch size, out dir).
        clients: number of emulated edge clients.
        shards: server shards, each a replica of the tail; client c uses shard c % shards.
        client_cpu: cap on each client's compute, as a fraction of one core (0.4 = 40%);
            None = uncapped. Also its ``num_cpus`` for Ray's scheduler.
        cap_mechanism: "auto" (cgroup where writable, else throttle), "cgroup", "throttle", "none".
        clients_per_actor: emulated clients hosted per actor process: a number (1 = one
            actor process each), or "auto": one each while there are at most 4 client
            processes per cluster CPU, else as few per process as keeps within that
            (``hosting``). Each process holds its own torch (~0.33 GiB here), and more
            processes than that only time-share the cores.
        mode: "independent" (own head per client) or "splitfed" (heads averaged every
            epoch, weighted by samples).
        policy: "sync" (all clients change budget together at epoch boundaries) or
            "async" (each client walks the schedule at its own pace).
        shard_sync: "average" (driver averages replicas' parameters) or "allreduce"
            (torch.distributed all-reduce inside the shards: gloo on CPU, nccl on GPU).
        sync_every: also sync replicas every this many steps per client (0 = at epoch
            ends only). Ignored with one shard.
        partition, alpha: how the training set is split across clients (Dirichlet α).
        max_merge: most client micro-batches a shard merges into one forward/backward.
        shard_cpus: ``num_cpus`` of each shard actor.
        shard_device: "auto" (GPU when the cluster has one), "cpu" or "cuda".
        shard_threads: torch threads in each shard (None = shard_cpus rounded, >= 1).
        malloc: glibc malloc mode of the actors: "lean" (return freed tensors to the OS:
            least memory per idle client, slower steps), "fast" (two arenas: bounded
            growth, fast), "auto" (lean when clients > 4 x cluster CPUs).
        openmp_spin: iterations an idle OpenMP thread of an actor spins before it sleeps
            (libgomp's GOMP_SPINCOUNT; None = libgomp's default, 300,000). A client and
            its shard compute in turn, and threads left spinning in one process take the
            cores the other is computing on; too little spin makes every op wait for a
            wake-up. 30,000 measured best with 2 torch threads per process, by a few
            percent (benchmarks/results/spin_sweep); with 1 thread it has no effect.
        fail_client: test hook: (client, epoch) at which that client raises.
    """

    train: TrainConfig = field(default_factory=TrainConfig)
    clients: int = 4
    shards: int = 1
    client_cpu: float | None = None
    cap_mechanism: str = "auto"
    clients_per_actor: int | str = "auto"
    mode: str = "independent"
    policy: str = "sync"
    shard_sync: str = "average"
    sync_every: int = 0
    partition: str = "iid"
    alpha: float = 0.5
    max_merge: int = 32
    shard_cpus: float = 1.0
    shard_device: str = "auto"
    shard_threads: int | None = None
    malloc: str = "auto"
    openmp_spin: int | None = 30_000
    fail_client: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.clients < 1:
            raise ValueError(f"clients must be >= 1, got {self.clients}")
        if not 1 <= self.shards <= self.clients:
            raise ValueError(f"shards must be in 1..clients ({self.clients}), got {self.shards}")
        check_cap(self.client_cpu)
        for name, val, allowed in (
            ("cap_mechanism", self.cap_mechanism, MECHANISMS),
            ("mode", self.mode, MODES),
            ("policy", self.policy, POLICIES),
            ("shard_sync", self.shard_sync, SHARD_SYNC),
            ("partition", self.partition, PARTITIONS),
            ("shard_device", self.shard_device, ("auto", "cpu", "cuda")),
            ("malloc", self.malloc, MALLOC_MODES),
        ):
            if val not in allowed:
                raise ValueError(f"unknown {name} {val!r}; choose one of {', '.join(allowed)}")
        _check_int_or("clients_per_actor", self.clients_per_actor, "auto", 1)
        _check_int_or("openmp_spin", self.openmp_spin, None, 0)
        if self.sync_every < 0:
            raise ValueError(f"sync_every must be >= 0, got {self.sync_every}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if self.max_merge < 1:
            raise ValueError(f"max_merge must be >= 1, got {self.max_merge}")
        if self.shard_cpus < 0:
            raise ValueError(f"shard_cpus must be >= 0, got {self.shard_cpus}")
        if self.policy == "async" and self.mode == "splitfed":
            raise ValueError("mode 'splitfed' averages heads at common epoch ends: it needs policy 'sync'")

    def replace(self, **changes) -> "ClusterConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_int_or(name: str, value: object, word: object, minimum: int) -> None:
    """``value`` must be ``word`` or an integer >= ``minimum`` (bools are not integers here)."""
    if value == word and type(value) is type(word):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be {word!r} or an integer >= {minimum}, got {value!r}")

