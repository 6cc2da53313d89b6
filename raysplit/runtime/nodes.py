"""Which nodes the actors go to: node types (``shard`` / ``client`` resources) and
placement groups.

A cloud cluster has two kinds of worker nodes (``cluster.yaml``,
``deploy/kuberay/rayjob.yaml``): GPU nodes that declare a ``shard`` resource and CPU
nodes that declare a ``client`` resource. One unit of ``shard`` holds one server shard;
one unit of ``client`` holds one client actor process (which may host several emulated
clients). The head declares neither and no CPUs: the driver is a plain process and asks
for nothing; the scheduler and the record buffer (zero CPUs) are pinned to the driver's
node, so losing a worker node cannot take the run's bookkeeping with it.

Where co-location matters, the actors are created in placement groups
(:data:`PLACEMENTS`):

* ``default``: no placement group; each actor asks for its resources and Ray's default
  scheduling places it.
* ``spread``: one group over every shard and client host with Ray's SPREAD strategy:
  hosts are spread evenly over the client nodes, shards over the shard nodes.
* ``colocate``: one group per shard with Ray's PACK strategy: the shard and the hosts of
  its clients on one node where a node has room for them all (activations then cross no
  network); clients are grouped into hosts shard by shard, so every host talks to one shard.

Everything here but :func:`inventory_now` and :func:`create_groups` is pure: the plan
(:class:`Layout`) is a function of the configuration and of what the cluster has, and
``tests/test_cluster_yaml.py`` checks the deployment files against the demands it makes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from raysplit.runtime.placement import client_num_cpus, hosting, max_client_processes, shard_of

SHARD, CLIENT = "shard", "client"
PLACEMENTS = ("default", "spread", "colocate")
NODE_TYPES = ("auto", "always", "never")
# Ray refuses a placement-group bundle whose resources are all zero; a host that asks for
# no CPU share gets this much in a bundle.
MIN_BUNDLE_CPU = 0.001
# How long a colocated group planned onto one node (STRICT_PACK) may wait before it is
# placed with PACK instead (another group, or someone else, took that node's room).
STRICT_WAIT_S = 10.0


@dataclass(frozen=True)
class Inventory:
    """What the cluster has, or what its autoscaler can grow it to.

    Args:
        cpus: CPUs of all nodes.
        gpus: GPUs of all nodes.
        client_cpus: CPUs of the nodes that declare ``client`` (0: none does).
        client_units: ``client`` units (client processes the cluster can hold).
        shard_units: ``shard`` units.
        shard_gpus: GPUs of the nodes that declare ``shard``.
        shared_cpus: CPUs of nodes that declare both (shards and clients compete there).
        autoscaler: the figures include nodes the autoscaler may still add.
        nodes: each alive node's resources (to tell which node can hold a whole group).
    """

    cpus: float
    gpus: float = 0.0
    client_cpus: float = 0.0
    client_units: float = 0.0
    shard_units: float = 0.0
    shard_gpus: float = 0.0
    shared_cpus: float = 0.0
    autoscaler: bool = False
    nodes: tuple[dict, ...] = field(default=(), compare=False, repr=False)


HEAD_MARK = "node:__internal_head__"  # the resource Ray gives the head node
# An autoscaler node group without a maximum counts as this many nodes.
UNBOUNDED_NODES = 1000


def inventory(nodes: list[dict], node_types: list[tuple[dict, int]] | None = None) -> Inventory:
    """An :class:`Inventory` from ``ray.nodes()`` (the alive nodes' ``Resources``) or, for
    an autoscaling cluster, from the head plus every worker node type at its maximum
    (``node_types``: (resources, max count) each, see :func:`autoscaler_node_types`)."""
    alive = [dict(n.get("Resources", {})) for n in nodes if n.get("Alive", True)]
    if node_types:
        alive = [r for r in alive if r.get(HEAD_MARK)]
        for res, count in node_types:
            alive += [dict(res) for _ in range(UNBOUNDED_NODES if count < 0 else int(count))]
    tot: dict[str, float] = {}
    for r in alive:
        cpu, gpu, client, shard = (r.get(k, 0.0) for k in ("CPU", "GPU", CLIENT, SHARD))
        for key, val in (("cpus", cpu), ("gpus", gpu), ("client_units", client), ("shard_units", shard),
                         ("client_cpus", cpu if client else 0.0), ("shard_gpus", gpu if shard else 0.0),
                         ("shared_cpus", cpu if client and shard else 0.0)):
            tot[key] = tot.get(key, 0.0) + val
    return Inventory(**{"cpus": 0.0, **tot}, autoscaler=bool(node_types), nodes=tuple(alive))


def launcher_node_types(config: dict) -> list[tuple[dict, int]]:
    """The worker node types of a cluster-launcher config (cluster.yaml as ``ray up``
    prepared it, e.g. the head's ``~/ray_bootstrap_config.yaml``): (resources, max_workers)."""
    types = config.get("available_node_types", {})
    head = config.get("head_node_type")
    return [(dict(t.get("resources", {})), int(t.get("max_workers", 0))) for name, t in types.items()
            if name != head and t.get("max_workers", 0)]


def autoscaler_node_types() -> list[tuple[dict, int]] | None:
    """The node types the connected cluster's autoscaler may add, if it tells: the
    autoscaler's cluster config in the GCS (autoscaler v2, e.g. KubeRay), else the cluster
    launcher's ``~/ray_bootstrap_config.yaml`` when the driver runs on a ``ray up`` head."""
    import os

    import ray

    try:  # private API (Ray >= 2.40); None without an autoscaler that reports its config
        cfg = ray._private.state.state.get_cluster_config()
        if cfg is not None and cfg.node_group_configs:
            return [(dict(g.resources), int(g.max_count)) for g in cfg.node_group_configs]
    except Exception:  # noqa: BLE001 - no such config here
        pass
    path = os.path.expanduser("~/ray_bootstrap_config.yaml")
    if os.path.exists(path):
        import yaml

        with open(path, encoding="utf-8") as f:
            return launcher_node_types(yaml.safe_load(f)) or None
    return None


def inventory_now() -> Inventory:
    """The connected cluster's inventory (the alive nodes, or what its autoscaler may add)."""
    import ray

    return inventory(ray.nodes(), autoscaler_node_types())


@dataclass(frozen=True)
class Group:
    """One placement group: its bundles, its strategy, and which actor takes which bundle.

    Args:
        strategy: Ray's placement strategy (PACK, SPREAD).
        bundles: resources per bundle.
        members: (kind, index) per bundle: ("shard", k) or ("host", i).
    """

    strategy: str
    bundles: tuple[dict, ...]
    members: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Layout:
    """Where every actor of a run goes.

    Args:
        placement: one of PLACEMENTS.
        node_types: (shards ask for ``shard``, hosts ask for ``client``).
        use_gpu: shards compute on a GPU (and ask for one).
        shards: server shards.
        hosts: client ids per client host process.
        shard_resources: what each shard asks for (Ray resource names, CPU and GPU included).
        host_resources: what each host asks for.
        client_num_cpus: Ray's CPU share of one client.
        groups: the placement groups (none for ``default``).
        notes: what was decided and why, for the log.
    """

    placement: str
    node_types: tuple[bool, bool]
    use_gpu: bool
    shards: int
    hosts: tuple[tuple[int, ...], ...]
    shard_resources: dict
    host_resources: tuple[dict, ...]
    client_num_cpus: float
    groups: tuple[Group, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def clients_per_actor(self) -> int:
        return max(len(h) for h in self.hosts)

    def demands(self) -> list[dict]:
        """Every actor's resource demand (shards first), as an autoscaler sees them."""
        return [dict(self.shard_resources) for _ in range(self.shards)] + [dict(r) for r in self.host_resources]

    def host_of(self) -> dict[int, int]:
        """{client: index of its host}."""
        return {c: i for i, ids in enumerate(self.hosts) for c in ids}


def use_node_types(setting: str, inv: Inventory) -> tuple[bool, bool]:
    """Whether shards ask for ``shard`` and hosts for ``client``: "always", "never", or
    (auto) each when the cluster declares it, now or through its autoscaler."""
    if setting not in NODE_TYPES:
        raise ValueError(f"unknown node_types {setting!r}; choose one of {', '.join(NODE_TYPES)}")
    if setting != "auto":
        return (setting == "always",) * 2
    return inv.shard_units > 0, inv.client_units > 0


def host_groups(clients: int, shards: int, per_host: int, by_shard: bool,
                caps: Sequence[float | None] | None = None) -> list[tuple[int, ...]]:
    """Client ids per host: contiguous runs of ``per_host``, or (``by_shard``) runs of
    the clients of one shard each, so that every host talks to a single shard. With
    ``caps`` (each client's CPU cap: device classes) a run also ends where the cap
    changes, since a host process has one cap."""
    if per_host < 1:
        raise ValueError(f"clients per host must be >= 1, got {per_host}")
    ids = list(range(clients))
    lists = [[c for c in ids if shard_of(c, shards) == k] for k in range(shards)] if by_shard else [ids]
    out: list[tuple[int, ...]] = []
    for lst in lists:
        run: list[int] = []
        for c in lst:
            if run and (len(run) == per_host or (caps is not None and caps[c] != caps[run[0]])):
                out.append(tuple(run))
                run = []
            run.append(c)
        if run:
            out.append(tuple(run))
    return out


def _clean(resources: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in resources.items() if v}


def plan_layout(*, clients: int, shards: int, clients_per_actor: int | str, client_cpu: float | None,
                shard_cpus: float, shard_device: str, placement: str, node_types: str,
                inv: Inventory, client_caps: Sequence[float | None] | None = None) -> Layout:
    """The :class:`Layout` of a run (the arguments are the ``ClusterConfig`` fields of
    the same names; ``client_caps``: each client's own CPU cap, from its device class,
    default ``client_cpu`` for all)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}; choose one of {', '.join(PLACEMENTS)}")
    typed_shard, typed_client = use_node_types(node_types, inv)
    notes = []
    gpus = inv.shard_gpus if typed_shard and inv.shard_units else inv.gpus
    use_gpu = shard_device == "cuda" or (shard_device == "auto" and gpus >= shards)
    if typed_client:
        # Client processes are bounded by the client units (each host takes one) and, as on
        # one machine, by 4 per CPU of the client nodes.
        cpus = inv.client_cpus or inv.cpus
        limit = max_client_processes(cpus)
        if inv.client_units >= 1:
            limit = min(limit, int(inv.client_units)) if inv.client_cpus else int(inv.client_units)
        per_host = int(clients_per_actor) if clients_per_actor != "auto" else -(-clients // limit)
        if inv.client_units < 1:
            notes.append("no node declares 'client' yet (an autoscaling cluster): "
                         f"{per_host} clients per process from {cpus:g} CPUs; set --clients-per-actor")
        # Shards compete for the client nodes' CPUs only on nodes that declare both.
        competing = shards if (inv.shared_cpus or not typed_shard) else 0
        share_of = lambda cap: client_num_cpus(cap, clients, cpus, shard_cpus, competing)  # noqa: E731
    else:
        per_host = hosting(clients_per_actor, clients, inv.cpus)
        share_of = lambda cap: client_num_cpus(cap, clients, inv.cpus, shard_cpus, shards)  # noqa: E731
    share = share_of(client_cpu)
    caps = list(client_caps) if client_caps is not None else [client_cpu] * clients
    hosts = host_groups(clients, shards, per_host, by_shard=placement == "colocate", caps=caps)
    shard_res = _clean({"CPU": shard_cpus, "GPU": 1 if use_gpu else 0, SHARD: 1 if typed_shard else 0})
    host_res = tuple(_clean({"CPU": share_of(caps[h[0]]) * len(h), CLIENT: 1 if typed_client else 0}) for h in hosts)
    if node_types == "auto" and not inv.autoscaler:  # a fixed cluster: say now what can never be placed
        for what, n, units, typed in ((SHARD, shards, inv.shard_units, typed_shard),
                                      (CLIENT, len(hosts), inv.client_units, typed_client)):
            if typed and n > units:
                raise NotEnoughNodes(
                    f"{n} {what} actors need {n} '{what}' resource units but the cluster's nodes declare "
                    f"{units:g} (one unit per {'shard' if what == SHARD else 'client process'}): add nodes, "
                    + ("use fewer --shards" if what == SHARD else "raise --clients-per-actor")
                    + ", or --node-types never")
    groups: list[Group] = []
    if placement != "default":
        bundle = lambda r: r or {"CPU": MIN_BUNDLE_CPU}  # noqa: E731 - see MIN_BUNDLE_CPU
        if placement == "spread":
            members = [(SHARD, k) for k in range(shards)] + [("host", i) for i in range(len(hosts))]
            bundles = [bundle(shard_res)] * shards + [bundle(r) for r in host_res]
            groups.append(Group("SPREAD", tuple(bundles), tuple(members)))
        else:
            free = [dict(n) for n in inv.nodes]
            for k in range(shards):
                mine = [i for i, h in enumerate(hosts) if shard_of(h[0], shards) == k]
                bundles = (bundle(shard_res), *[bundle(host_res[i]) for i in mine])
                # Ray's PACK does not keep a group on one node even where one node could hold it
                # (tests/test_multinode.py saw it split), so a group that fits one node (first
                # fit, in creation order) is STRICT_PACK; the others stay PACK (fewest nodes).
                fit = _first_fit(free, _sum(bundles))
                groups.append(Group("PACK" if fit is None else "STRICT_PACK", bundles,
                                    ((SHARD, k), *[("host", i) for i in mine])))
                if fit is None:
                    notes.append(f"no node can hold shard {k} with its client processes ({_sum(bundles)}): "
                                 "they are packed onto as few nodes as possible")
    return Layout(placement, (typed_shard, typed_client), use_gpu, shards, tuple(hosts), shard_res, host_res, share, tuple(groups),
                  tuple(notes))


class NotEnoughNodes(ValueError):
    """The cluster's nodes (without an autoscaler) cannot hold the run's actors."""


def layout_for(cc: Any, inv: Inventory) -> Layout:
    """:func:`plan_layout` for a ``ClusterConfig`` (a tenant with ``cpu_share`` plans
    with that share of the CPUs)."""
    if cc.cpu_share:
        k = cc.cpu_share
        inv = dataclasses.replace(inv, cpus=inv.cpus * k, client_cpus=inv.client_cpus * k,
                                  shared_cpus=inv.shared_cpus * k)
    return plan_layout(clients=cc.clients, shards=cc.shards, clients_per_actor=cc.clients_per_actor,
                       client_cpu=cc.client_cpu, shard_cpus=cc.shard_cpus, shard_device=cc.shard_device,
                       placement=cc.placement, node_types=cc.node_types, inv=inv,
                       client_caps=cc.train.link.client_cpus(cc.clients, cc.client_cpu))


# -- on a running cluster --------------------------------------------------------------


def wait_for_layout(cc: Any, poll_s: float = 2.0) -> Layout:
    """The layout for the connected cluster, waiting up to ``cc.placement_timeout`` for
    nodes that are still joining (a fixed-size KubeRay cluster whose worker pods start
    after the job): until then, the error says what is missing."""
    deadline = time.monotonic() + cc.placement_timeout
    said = False
    while True:
        try:
            return layout_for(cc, inventory_now())
        except NotEnoughNodes as e:
            if time.monotonic() + poll_s > deadline:
                raise
            if not said:
                print(f"[raysplit] waiting up to {cc.placement_timeout:g} s for nodes: {e}", flush=True)
                said = True
            time.sleep(poll_s)


def actor_options(layout: Layout, kind: str, index: int, strategies: dict) -> dict:
    """Ray ``.options`` for shard ``index`` or host ``index`` (``strategies`` from
    :func:`create_groups`)."""
    res = dict(layout.shard_resources if kind == SHARD else layout.host_resources[index])
    opts: dict[str, Any] = {"num_cpus": res.pop("CPU", 0), "num_gpus": res.pop("GPU", 0)}
    if res:
        opts["resources"] = res
    if (kind, index) in strategies:
        opts["scheduling_strategy"] = strategies[(kind, index)]
    return opts


def create_groups(layout: Layout, timeout_s: float = 600.0) -> tuple[list, dict]:
    """Create the layout's placement groups and wait until they are placed (on an
    autoscaling cluster, their pending bundles are what makes it add nodes). Returns
    (the groups, {(kind, index): scheduling strategy}). A group not placed within
    ``timeout_s`` is removed and reported with what it asked for and what the cluster has."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pgs, strategies = [], {}
    deadline = time.monotonic() + timeout_s
    # One group at a time: a PACK group placed while another is pending could take the
    # one node that can hold the other's shard with its hosts.
    for g in layout.groups:
        pg = placement_group(list(g.bundles), strategy=g.strategy)
        ready = []
        if g.strategy == "STRICT_PACK":  # planned to fit one node; if another took it, settle for PACK
            ready, _ = ray.wait([pg.ready()], timeout=min(STRICT_WAIT_S, max(deadline - time.monotonic(), 0.0)))
            if not ready:
                remove_placement_group(pg)
                print(f"[raysplit] no node took {_sum(g.bundles)} whole within {STRICT_WAIT_S:g} s: PACK instead",
                      flush=True)
                pg = placement_group(list(g.bundles), strategy="PACK")
        pgs.append(pg)
        if not ready:
            ready, _ = ray.wait([pg.ready()], timeout=max(deadline - time.monotonic(), 0.0))
        if not ready:
            for p in pgs:
                remove_placement_group(p)
            raise RuntimeError(
                f"placement group ({g.strategy}, {len(g.bundles)} bundles, {_sum(g.bundles)}) was not placed "
                f"within {timeout_s:g} s; the cluster has {ray.cluster_resources()} (placement "
                f"{layout.placement!r}: use fewer clients per node, more nodes, or --placement default)")
        for b, member in enumerate(g.members):
            strategies[member] = PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=b)
    return pgs, strategies


def on_driver_node() -> dict:
    """Options pinning a zero-CPU control actor (scheduler, record buffer) to the
    driver's node. Not soft: with soft affinity Ray placed one of the two elsewhere
    (tests/test_multinode.py saw it), and a zero-CPU actor fits every node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    return {"num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}


def _sum(bundles) -> dict:
    out: dict[str, float] = {}
    for b in bundles:
        for k, v in b.items():
            out[k] = out.get(k, 0) + v
    return {k: (round(v, 4) if isinstance(v, float) and not math.isclose(v, round(v)) else v) for k, v in out.items()}


def _first_fit(free: list[dict], need: dict) -> int | None:
    """The first node in ``free`` that holds ``need``, its resources then taken; None if none."""
    for i, node in enumerate(free):
        if all(node.get(k, 0) >= v - 1e-9 for k, v in need.items()):
            for k, v in need.items():
                node[k] = node.get(k, 0) - v
            return i
    return None


def remove_groups(pgs: list) -> None:
    """Remove placement groups (their actors are gone)."""
    from ray.util.placement_group import remove_placement_group

    for pg in pgs:
        try:
            remove_placement_group(pg)
        except Exception:  # noqa: BLE001 - already removed with its job
            pass


def where(layout: Layout, shard_info: list[dict], host_info: list[dict]) -> dict:
    """The run's placement for its summary: strategy, node types, and each actor's node."""
    return {
        "strategy": layout.placement,
        "node_types": {SHARD: layout.node_types[0], CLIENT: layout.node_types[1]},
        "shards": {str(s["shard"]): s.get("node") for s in shard_info},
        "hosts": [{"clients": list(h["clients"]), "node": h.get("node")} for h in host_info],
        "shard_resources": dict(layout.shard_resources),
        "host_resources": [dict(r) for r in layout.host_resources],
    }


def wait_ready(actors: list, timeout_s: float) -> list[dict]:
    """Every actor's ``ready()`` answer; an actor still not started after ``timeout_s``
    (no node has its resources and none comes up) is an error saying how many wait."""
    import ray

    refs = [a.ready.remote() for a in actors]
    done, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    if pending:
        raise RuntimeError(
            f"{len(pending)} of {len(refs)} actors did not start within {timeout_s:g} s (no node has the resources "
            f"they ask for; the cluster has {ray.cluster_resources()}): see --placement-timeout, --node-types")
    return ray.get(refs)


def nodes_to_launch(demands: list[dict], config: dict) -> tuple[dict[str, int], list[dict]]:
    """The worker nodes, by type, that Ray's autoscaler launches for ``demands`` on a
    cluster described by a cluster-launcher ``config`` (cluster.yaml, or what Ray derives
    from a KubeRay RayCluster), starting from the head alone; and the demands no node
    type can hold. Ray's own bin packing (``resource_demand_scheduler.get_nodes_for``,
    private API of the Ray range pinned in pyproject.toml)."""
    import functools

    from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary
    from ray.autoscaler._private.resource_demand_scheduler import _default_utilization_scorer, get_nodes_for

    types = {name: {"resources": dict(t.get("resources", {})), "max_workers": int(t.get("max_workers", 0))}
             for name, t in config["available_node_types"].items()}
    scorer = functools.partial(_default_utilization_scorer,
                               node_availability_summary=NodeAvailabilitySummary(node_availabilities={}))
    head = config["head_node_type"]
    # the head is there already: what it can hold is not asked of new nodes
    residual, _ = _bin_pack([types[head]["resources"]], [d for d in demands if d])
    to_add, left = get_nodes_for(types, {head: 1}, head, int(config.get("max_workers", 0)), residual, scorer)
    return dict(to_add), left


def _bin_pack(nodes: list[dict], demands: list[dict]) -> tuple[list[dict], list[dict]]:
    from ray.autoscaler._private.resource_demand_scheduler import get_bin_pack_residual

    return get_bin_pack_residual(nodes, demands)
