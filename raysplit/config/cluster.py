"""A multi-client run on Ray, on top of the training configuration."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from raysplit.budget.policies import POLICIES, AdaptiveConfig
from raysplit.budget.selection import Selection, Trace, parse_availability, parse_per_round
from raysplit.config.cli import option
from raysplit.config.train import TrainConfig
from raysplit.runtime.cpu_cap import MECHANISMS, check_cap
from raysplit.runtime.nodes import NODE_TYPES, PLACEMENTS
from raysplit.runtime.failure import FAILURE_POLICIES

MODES = ("independent", "splitfed", "ushaped")
SHARD_SYNC = ("average", "allreduce")
PARTITIONS = ("iid", "dirichlet")
MALLOC_MODES = ("auto", "lean", "fast")
DEVICES = ("auto", "cpu", "cuda")


def _client_epoch(text: str) -> tuple[int, int]:
    try:
        c, e = (int(v) for v in text.split(":"))
    except ValueError:
        raise ValueError(f"{text!r}: expected CLIENT:EPOCH, e.g. 3:1") from None
    return c, e


@dataclass(frozen=True)
class ClusterConfig:
    """A multi-client split-learning run on Ray.

    Args:
        train: the training run (model, data, schedule, codec, batch size, run directory).
        clients: emulated edge clients.
        shards: server shards, each a replica of the tail; client c uses shard c % shards.
        client_cpu: cap on each client's compute, a fraction of one core (0.4 = 40 %); none = uncapped.
        cap_mechanism: how the cap is enforced: auto (cgroup where writable, else throttle), cgroup,
            throttle, none.
        clients_per_actor: emulated clients per actor process: N, or auto (one each while there are at
            most 4 client processes per CPU, else as few per process as keeps within that; each process
            holds its own torch).
        materialise: virtual clients: at most this many clients of each actor process are materialised
            (hold torch modules) at once; the others are parked as numpy between directives
            (``raysplit.runtime.virtual``); all = every client stays materialised.
        mode: independent (own head per client), splitfed (heads averaged every epoch, weighted by
            samples) or ushaped (label-private: each client also keeps the last layers and the labels, the
            shards run only the middle; see --u-cut).
        policy: how clients move through the budget schedule (``raysplit.budget.policies``): sync (all
            together, epoch by epoch), async (each at its own pace) or adaptive (each client's budget set
            from its emulated link against a step-time target or deadline: see AdaptiveConfig).
        adaptive: the adaptive policy's targets (--target-step-s, --deadline-s, ...).
        shard_sync: how tail replicas are kept equal: average (parameters averaged through the
            scheduler) or allreduce (torch.distributed inside the shards: gloo on CPU, nccl on GPU).
        sync_every: also sync the replicas every this many steps per client (0 = at epoch ends).
        partition: how the training set is split across clients: iid or dirichlet (label skew).
        alpha: Dirichlet alpha for --partition dirichlet (smaller = more skew).
        max_merge: most client micro-batches a shard merges into one forward/backward.
        shard_cpus: Ray num_cpus of each shard actor.
        shard_device: where the shards compute: auto (a GPU when the cluster has one per shard), cpu,
            cuda.
        shard_threads: torch threads in each shard (default: shard_cpus rounded, at least 1).
        malloc: glibc malloc mode of the actors: fast (freed tensors stay in the heap: no page faults
            per step) or lean (tensors over 64 KiB go back to the OS: least memory, ~25 % slower
            steps); auto = fast.
        openmp_spin: iterations an idle OpenMP thread of an actor spins before it sleeps
            (GOMP_SPINCOUNT; none = libgomp's 300000).
        placement: where the actors go (``raysplit.runtime.nodes``): default (Ray's scheduling), spread
            (a SPREAD placement group: hosts evenly over the client nodes, shards over the shard nodes) or
            colocate (a PACK placement group per shard with the hosts of its clients: one node where it fits).
        node_types: shards ask for the ``shard`` resource and client processes for ``client`` (the node
            types of cluster.yaml and deploy/kuberay): auto (each when the cluster declares it), always (an
            autoscaling cluster that adds those nodes on demand), never.
        placement_timeout: seconds to wait for the placement groups to be placed (nodes to come up).
        clients_per_round: participant selection: the clients that train each epoch (a round), drawn
            uniformly among the available ones: a count (100), a fraction (0.1) or all
            (``raysplit.budget.selection``; needs policy sync, or adaptive with adaptive_base sync).
        availability: who can be drawn in a round: always, markov:ON,OFF (synthetic active/inactive
            periods, mean lengths in rounds) or trace:PATH (CSV client,start,end: active rounds start..end-1).
        fail_client: testing: CLIENT:EPOCH at which that client raises.
        cpu_share: the share of the cluster's CPUs this run plans with (hosting, the clients' Ray CPU
            share): several tenants on one cluster each take theirs (none = all of them).
        failure_policy: what a failure leads to (``raysplit.runtime.failure``): restart (a client,
            shard or scheduler whose process died comes back from its last recovery state, up to
            max_failures times each; then a client is excluded, a shard or the scheduler stops the run),
            exclude (a failed client is dropped at once, nothing restarts), raise (stop at the first
            failure).
        max_failures: restarts allowed per client, shard and scheduler under --failure-policy restart
            (0 = none: a failed client is excluded).
    """

    train: TrainConfig = field(default_factory=TrainConfig)
    clients: int = 8
    shards: int = 1
    client_cpu: float | None = None
    cap_mechanism: str = field(default="auto", metadata=option(choices=MECHANISMS))
    clients_per_actor: int | str = field(default="auto", metadata=option(words=("auto",)))
    materialise: int | str = field(default="all", metadata=option(words=("all",)))
    mode: str = field(default="independent", metadata=option(choices=MODES))
    policy: str = field(default="sync", metadata=option(choices=lambda: tuple(POLICIES)))
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)
    shard_sync: str = field(default="average", metadata=option(choices=SHARD_SYNC))
    sync_every: int = 0
    partition: str = field(default="iid", metadata=option(choices=PARTITIONS))
    alpha: float = 0.5
    max_merge: int = 32
    shard_cpus: float = 1.0
    shard_device: str = field(default="auto", metadata=option(choices=DEVICES))
    shard_threads: int | None = field(default=None, metadata=option(none_word="default"))
    malloc: str = field(default="auto", metadata=option(choices=MALLOC_MODES))
    openmp_spin: int | None = 30_000
    placement: str = field(default="default", metadata=option(choices=PLACEMENTS))
    node_types: str = field(default="auto", metadata=option(choices=NODE_TYPES))
    placement_timeout: float = 600.0
    clients_per_round: int | float | None = field(
        default=None, metadata=option(parse=parse_per_round, none_word="all", metavar="all|N|FRACTION"))
    availability: str = "always"
    fail_client: tuple[int, int] | None = field(
        default=None, metadata=option(flag="inject-fault", parse=_client_epoch, metavar="CLIENT:EPOCH")
    )
    cpu_share: float | None = None
    failure_policy: str = field(default="restart", metadata=option(choices=lambda: tuple(FAILURE_POLICIES)))
    max_failures: int = 3

    def __post_init__(self) -> None:
        if self.clients < 1:
            raise ValueError(f"clients must be >= 1, got {self.clients}")
        if not 1 <= self.shards <= self.clients:
            raise ValueError(f"shards must be in 1..clients ({self.clients}), got {self.shards}")
        check_cap(self.client_cpu)
        for name, val, allowed in (
            ("cap_mechanism", self.cap_mechanism, MECHANISMS),
            ("mode", self.mode, MODES),
            ("policy", self.policy, tuple(POLICIES)),
            ("shard_sync", self.shard_sync, SHARD_SYNC),
            ("partition", self.partition, PARTITIONS),
            ("shard_device", self.shard_device, DEVICES),
            ("malloc", self.malloc, MALLOC_MODES),
            ("placement", self.placement, PLACEMENTS),
            ("node_types", self.node_types, NODE_TYPES),
            ("failure_policy", self.failure_policy, tuple(FAILURE_POLICIES)),
        ):
            if val not in allowed:
                raise ValueError(f"unknown {name} {val!r}; choose one of {', '.join(allowed)}")
        _check_int_or("clients_per_actor", self.clients_per_actor, "auto", 1)
        _check_int_or("materialise", self.materialise, "all", 1)
        _check_int_or("openmp_spin", self.openmp_spin, None, 0)
        if isinstance(self.max_failures, bool) or not isinstance(self.max_failures, int) or self.max_failures < 0:
            raise ValueError(f"max_failures must be an integer >= 0, got {self.max_failures!r}")
        if self.sync_every < 0:
            raise ValueError(f"sync_every must be >= 0, got {self.sync_every}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if self.max_merge < 1:
            raise ValueError(f"max_merge must be >= 1, got {self.max_merge}")
        if self.shard_cpus < 0:
            raise ValueError(f"shard_cpus must be >= 0, got {self.shard_cpus}")
        if self.placement_timeout <= 0:
            raise ValueError(f"placement_timeout must be > 0 seconds, got {self.placement_timeout}")
        if self.shard_threads is not None and self.shard_threads < 1:
            raise ValueError(f"shard_threads must be >= 1, got {self.shard_threads}")
        if self.cpu_share is not None and not 0 < self.cpu_share <= 1:
            raise ValueError(f"cpu_share must be in (0, 1], got {self.cpu_share}")
        if self.fail_client is not None:
            object.__setattr__(self, "fail_client", tuple(int(v) for v in self.fail_client))
        split = self.train.split
        if self.mode == "ushaped" and split.u_cut is None:  # the client keeps the classifier
            from raysplit.models.registry import build_layers

            u_cut = len(build_layers(split.model, split.input_shape[0], split.num_classes)) - 1
            object.__setattr__(self, "train", self.train.replace(split=split.replace(u_cut=u_cut)))
        elif self.mode != "ushaped" and split.u_cut is not None:
            raise ValueError(f"u_cut {split.u_cut} is the second cut of U-shaped training: it needs --mode ushaped")
        if self.policy == "adaptive":
            if self.mode == "splitfed" and self.adaptive.adaptive_base != "sync":
                raise ValueError("mode 'splitfed' with policy 'adaptive' needs --adaptive-base sync")
            if not self.train.link.enabled:
                raise ValueError("policy 'adaptive' sets budgets from the emulated link: give --link (or --devices)")
            if not (self.adaptive.target_step_s or self.adaptive.deadline_s):
                raise ValueError("policy 'adaptive' needs a target: --target-step-s SECONDS or --deadline-s SECONDS")
        elif self.policy != "sync" and self.mode == "splitfed":
            raise ValueError("mode 'splitfed' averages heads at common epoch ends: it needs policy 'sync'")
        if self.materialise != "all" and self.mode == "ushaped":
            raise ValueError("virtual clients (materialise) park the client half of split training: "
                             "mode 'ushaped' needs materialise all")
        object.__setattr__(self, "clients_per_round", parse_per_round(self.clients_per_round))
        self.selection()  # checks availability (a trace is read and must list every client)
        if not self.selection().everyone and (self.policy == "async" or (
                self.policy == "adaptive" and self.adaptive.adaptive_base != "sync")):
            got = (f"policy {self.policy!r}" if self.policy != "adaptive"
                   else f"policy 'adaptive' with adaptive_base {self.adaptive.adaptive_base!r}")
            raise ValueError("participant selection (clients_per_round, availability) draws clients per epoch: "
                             f"it needs policy 'sync', or 'adaptive' with --adaptive-base sync; got {got}")
        if self.policy != "sync" and self.sync_every:
            raise ValueError("sync_every syncs replicas at common step counts: it needs policy 'sync'")

    def policy_options(self) -> dict:
        """{policy name: its keyword options} for ``make_policy``."""
        return {"adaptive": {"config": self.adaptive}}

    @property
    def restarts(self) -> int:
        """Ray ``max_restarts`` of the clients', shards' and scheduler's actors."""
        return self.max_failures if self.failure_policy == "restart" else 0

    def selection(self) -> Selection:
        """Who takes part in each epoch (``raysplit.budget.selection``)."""
        seed = self.train.split.seed
        sel = Selection(self.clients_per_round, parse_availability(self.availability, seed), seed)
        if isinstance(sel.availability, Trace):
            sel.availability.check_covers(range(self.clients))
        return sel

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
