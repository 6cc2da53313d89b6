"""How many nodes a run of N clients needs on a cloud: the sizing model.

Inputs are measured (``benchmarks/sizing.py`` -> ``benchmarks/results/sizing.json``:
client CPU-seconds per sample, a CPU shard's samples/s, memory of a client process,
of each hosted client and of an idle client's compact state; the cluster-vs-local
efficiency from ``benchmarks/results/pipeline_efficiency.json``). The rest are
assumptions, printed with the table, that a user changes with flags:

* a fraction of the clients train at once (``--participation``: clients per round / N);
* each of them as an edge device with ``--device-cpu`` of a core (the paper's testbed:
  0.4), so the target throughput is participants x device-cpu / (client CPU-s per
  sample); or ``--target-sps`` sets the aggregate samples/s directly;
* node shapes of cluster.yaml: client nodes of 8 vCPU / 16 GiB with 8 ``client`` units
  (c6i.2xlarge); CPU shards one per core on such nodes (one torch thread each); GPU
  shard nodes one shard each (g5.xlarge), sized only from a GPU measurement
  (``benchmarks/sizing.py --device cuda``, ``--gpu-shard-sps``);
* at most ``--memory-headroom`` (0.8) of a node's memory is used (the rest: OS, raylet,
  object store overhead).

Client nodes = max(by CPU: cores the target needs / cores per node; by memory). With
every client materialised (today's runtime) a node holds 8 client processes and all its
clients' models and optimizer state; with virtual clients (``--virtual``) a node runs
one worker process per core that materialises one client at a time, and keeps the idle
clients' compact state.

    python tools/sizing.py                                   # N = 10^3 .. 10^5
    python tools/sizing.py --clients 2000 --target-sps 5000  # one size, a target throughput
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Measured:
    """Measured inputs.

    Args:
        client_cpu_s: client CPU-seconds per training sample (forward + backward, 1 thread).
        shard_cpu_sps: samples/s of one loaded CPU shard (merged micro-batches, 1 thread).
        shard_gpu_sps: samples/s of one GPU shard (None: not measured).
        worker_mib: a client process with Ray and torch imported.
        first_client_mib: the first client it hosts (model, optimizer, step memory).
        client_mib: each further client it hosts, materialised.
        idle_mib: an idle client's compact state (a virtual client between its turns).
        idle_all_in_mib: what each further idle client added to a whole run's memory (peak
            PSS of every Ray process, ``benchmarks/scaling.py``'s "PSS per added idle
            client": its state, its recovery point in the state store, its data share,
            loop and scheduler entries); None = not measured. Virtual sizing uses the
            larger of the two.
        virtual_ratio: samples/s of a run of many virtual clients over the same run with 8
            materialised clients on the same machine (``benchmarks/scaling.py``; the fixed
            costs per client turn: materialise, park, scheduler calls); virtual sizing
            divides the client cores by it. None = not measured (1).
        efficiency: cluster over local step throughput (the transport's share of a step).
        source: where the figures come from.
    """

    client_cpu_s: float
    shard_cpu_sps: float
    shard_gpu_sps: float | None
    worker_mib: float
    first_client_mib: float
    client_mib: float
    idle_mib: float
    efficiency: float
    source: str = ""
    idle_all_in_mib: float | None = None
    virtual_ratio: float | None = None

    def __post_init__(self) -> None:
        for name in ("client_cpu_s", "shard_cpu_sps", "worker_mib", "client_mib", "idle_mib"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.idle_all_in_mib is not None and not self.idle_all_in_mib > 0:
            raise ValueError(f"idle_all_in_mib must be > 0, got {self.idle_all_in_mib}")
        if self.virtual_ratio is not None and not 0 < self.virtual_ratio <= 1:
            raise ValueError(f"virtual_ratio must be in (0, 1], got {self.virtual_ratio}")
        if not 0 < self.efficiency <= 1:
            raise ValueError(f"efficiency must be in (0, 1], got {self.efficiency}")


@dataclass(frozen=True)
class Assumptions:
    """What the model assumes (each a flag).

    Args:
        participation: fraction of the clients training at once.
        device_cpu: each participant's compute, a fraction of a core.
        target_sps: aggregate samples/s to reach (None: participants at device speed).
        client_node_cpus, client_node_gib, client_units: a client node (cluster.yaml's cpu_client).
        cpu_shard_node_cpus: a CPU shard node (one 1-thread shard per core).
        memory_headroom: fraction of a node's memory the run may use.
        virtual: virtual clients (one materialised client per worker process, idle ones compact).
    """

    participation: float = 0.1
    device_cpu: float = 0.4
    target_sps: float | None = None
    client_node_cpus: int = 8
    client_node_gib: float = 16.0
    client_units: int = 8
    cpu_shard_node_cpus: int = 8
    memory_headroom: float = 0.8
    virtual: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.participation <= 1:
            raise ValueError(f"participation must be in (0, 1], got {self.participation}")
        if not self.device_cpu > 0:
            raise ValueError(f"device_cpu must be > 0, got {self.device_cpu}")
        if self.target_sps is not None and not self.target_sps > 0:
            raise ValueError(f"target_sps must be > 0, got {self.target_sps}")
        if not 0 < self.memory_headroom <= 1:
            raise ValueError(f"memory_headroom must be in (0, 1], got {self.memory_headroom}")
        for name in ("client_node_cpus", "client_units", "cpu_shard_node_cpus"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class Sizing:
    """The nodes N clients need.

    Args:
        clients, participants: N, and how many train at once.
        target_sps: aggregate training samples/s.
        client_cores: cores the clients' compute needs.
        client_gib: memory the clients need.
        client_nodes: client nodes (the larger of the two bounds).
        bound: "cpu" or "memory", whichever set client_nodes.
        cpu_shards, cpu_shard_nodes: 1-thread CPU shards for the target, and their nodes.
        gpu_shard_nodes: GPU shard nodes (None: no GPU measurement).
        clients_per_actor: clients per client process (--clients-per-actor).
    """

    clients: int
    participants: int
    target_sps: float
    client_cores: float
    client_gib: float
    client_nodes: int
    bound: str
    cpu_shards: int
    cpu_shard_nodes: int
    gpu_shard_nodes: int | None
    clients_per_actor: int


def target_sps(participants: int, m: Measured, a: Assumptions) -> float:
    """The aggregate samples/s to reach: given, or every participant at device speed."""
    return a.target_sps if a.target_sps is not None else participants * a.device_cpu / m.client_cpu_s


def idle_mib(m: Measured) -> float:
    """Memory per idle virtual client: the whole run's measured cost when known (it is
    larger than the state alone), else the state."""
    return m.idle_mib if m.idle_all_in_mib is None else max(m.idle_mib, m.idle_all_in_mib)


def idle_all_in(results: Path = RESULTS) -> tuple[float, str] | None:
    """The newest measured PSS per added idle client (MiB) of a virtual run with the
    default failure policy (restart) and no link, at its most clients, and where it is from."""
    best = None
    for f in sorted(results.glob("scaling*/*/scaling.json")):
        r = json.loads(f.read_text())
        rows = [x for x in r.get("rows", []) if x.get("marginal_pss_kib_per_client")
                and x.get("failure_policy") == "restart" and x.get("link", "none") == "none"]
        if rows:
            row = max(rows, key=lambda x: x["clients"])
            key = (r.get("created", ""), row["clients"])
            if best is None or key > best[0]:
                best = (key, row["marginal_pss_kib_per_client"] / 1024,
                        f"{f.relative_to(results)} ({row['clients']:,} clients)")
    return None if best is None else best[1:]


def virtual_ratio(results: Path = RESULTS) -> tuple[float, str] | None:
    """The newest measured samples/s of virtual clients over 8 materialised ones (one
    scaling run, no link), at its most clients, and where it is from."""
    best = None
    for f in sorted(results.glob("scaling*/*/scaling.json")):
        r = json.loads(f.read_text())
        rows = [x for x in r.get("rows", []) if x.get("link", "none") == "none"]
        base = next((x for x in rows if x["clients"] == 8 and x["materialise"] == "all"), None)
        virt = [x for x in rows if x["materialise"] != "all"]
        if base and virt:
            row = max(virt, key=lambda x: (x["clients"], x["sps_train_seconds"]))
            key = (r.get("created", ""), row["clients"])
            if best is None or key > best[0]:
                best = (key, row["sps_train_seconds"] / base["sps_train_seconds"],
                        f"{f.relative_to(results)} ({row['clients']:,} clients)")
    return None if best is None else best[1:]


def client_nodes_for_memory(n: int, m: Measured, a: Assumptions) -> int:
    """The fewest client nodes whose memory holds ``n`` clients."""
    usable = a.client_node_gib * 1024 * a.memory_headroom  # MiB per node
    if a.virtual:  # a worker per core, one client materialised in each; the rest compact
        fixed, per = a.client_node_cpus * (m.worker_mib + m.first_client_mib), idle_mib(m)
    else:  # client_units processes, every client materialised
        fixed, per = a.client_units * (m.worker_mib + m.first_client_mib - m.client_mib), m.client_mib
    if usable <= fixed:
        raise ValueError(f"a client node's usable memory ({usable:.0f} MiB) does not hold its processes "
                         f"({fixed:.0f} MiB): give nodes more memory (--client-node-gib)")
    return max(1, math.ceil(n * per / (usable - fixed)))


def size(n: int, m: Measured, a: Assumptions) -> Sizing:
    """The sizing for ``n`` clients."""
    if n < 1:
        raise ValueError(f"clients must be >= 1, got {n}")
    k = max(1, math.ceil(a.participation * n))
    t = target_sps(k, m, a)
    cores = t * m.client_cpu_s / m.efficiency
    if a.virtual and m.virtual_ratio is not None:
        cores /= m.virtual_ratio
    by_cpu = max(1, math.ceil(cores / a.client_node_cpus - 1e-9))
    by_mem = client_nodes_for_memory(n, m, a)
    nodes = max(by_cpu, by_mem)
    if a.virtual:
        mem_mib = nodes * a.client_node_cpus * (m.worker_mib + m.first_client_mib) + n * idle_mib(m)
    else:
        procs = min(nodes * a.client_units, n)
        mem_mib = procs * (m.worker_mib + m.first_client_mib) + (n - procs) * m.client_mib
    shards = max(1, math.ceil(t / (m.shard_cpu_sps * m.efficiency) - 1e-9))
    gpu = None if m.shard_gpu_sps is None else max(1, math.ceil(t / (m.shard_gpu_sps * m.efficiency) - 1e-9))
    processes = nodes * (a.client_node_cpus if a.virtual else a.client_units)
    return Sizing(
        clients=n, participants=k, target_sps=t, client_cores=cores, client_gib=mem_mib / 1024, client_nodes=nodes,
        bound="cpu" if by_cpu >= by_mem else "memory", cpu_shards=shards,
        cpu_shard_nodes=math.ceil(shards / a.cpu_shard_node_cpus), gpu_shard_nodes=gpu,
        clients_per_actor=math.ceil(n / processes),
    )


def load_measured(path: Path = RESULTS / "sizing.json", gpu_shard_sps: float | None = None,
                  efficiency: float | None = None) -> Measured:
    """The measured inputs from benchmarks/sizing.py's results (and, for the efficiency,
    pipeline_efficiency.json's 1-thread ratio), the slowest budget and the largest merge."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run python benchmarks/sizing.py first")
    r = json.loads(path.read_text())
    comp, mem = r["compute"], r["memory"]
    client = max(c["cpu_s_per_sample"] for c in comp["client"].values())
    merged = max(int(k) for k in next(iter(comp["shard"].values())))
    shard = min(s[str(merged)]["samples_per_s"] for s in comp["shard"].values())
    gpu = gpu_shard_sps
    if gpu is None and comp.get("shard_device", "cpu").startswith("cuda"):
        gpu, shard = shard, shard  # measured on a GPU: those are the GPU figures
    if efficiency is None:
        efficiency, src = 0.9, "assumed 0.9"
        pe = path.parent / "pipeline_efficiency.json"
        if pe.exists():
            rows = [x for x in json.loads(pe.read_text()).get("rows", [])
                    if x.get("threads") == 1 and x.get("actors") == "auto" and x.get("ratio")]
            if rows:
                efficiency, src = float(rows[0]["ratio"]), "pipeline_efficiency.json (1 thread)"
    else:
        src = "--efficiency"
    all_in, ratio = idle_all_in(path.parent), virtual_ratio(path.parent)
    return Measured(client_cpu_s=client, shard_cpu_sps=shard, shard_gpu_sps=gpu, worker_mib=mem["worker"]["uss_mib"],
                    first_client_mib=mem["first_hosted_client_uss_mib"], client_mib=mem["per_hosted_client_uss_mib"],
                    idle_mib=mem["state_mib"], efficiency=efficiency,
                    source=f"{path.name} ({r.get('created', '?')}), efficiency {src}"
                    + ("" if all_in is None else f", idle client all-in {all_in[1]}")
                    + ("" if ratio is None else f", virtual throughput {ratio[1]}"),
                    idle_all_in_mib=None if all_in is None else all_in[0],
                    virtual_ratio=None if ratio is None else ratio[0])


def table(rows: list[Sizing]) -> str:
    head = ["clients", "training at once", "target samples/s", "client cores", "client GiB", "client nodes",
            "bound", "CPU shards", "CPU shard nodes", "GPU shard nodes", "--clients-per-actor"]
    cells = [[f"{s.clients:,}", f"{s.participants:,}", f"{s.target_sps:,.0f}", f"{s.client_cores:,.0f}",
              f"{s.client_gib:,.1f}", f"{s.client_nodes:,}", s.bound, f"{s.cpu_shards:,}", f"{s.cpu_shard_nodes:,}",
              "not measured" if s.gpu_shard_nodes is None else f"{s.gpu_shard_nodes:,}", str(s.clients_per_actor)]
             for s in rows]
    w = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    lines = ["| " + " | ".join(h.ljust(x) for h, x in zip(head, w)) + " |",
             "|" + "|".join("-" * (x + 1) + ":" for x in w) + "|"]
    lines += ["| " + " | ".join(c.rjust(x) for c, x in zip(cs, w)) + " |" for cs in cells]
    return "\n".join(lines)


def assumptions_text(m: Measured, a: Assumptions) -> str:
    t = ("participants x device speed" if a.target_sps is None else f"{a.target_sps:,.0f} samples/s (given)")
    return "\n".join([
        f"measured ({m.source}): client {1000 * m.client_cpu_s:.2f} CPU-ms/sample; CPU shard "
        f"{m.shard_cpu_sps:,.0f} samples/s (1 thread, merged); GPU shard "
        + ("not measured (no GPU here)" if m.shard_gpu_sps is None else f"{m.shard_gpu_sps:,.0f} samples/s")
        + f"; client process {m.worker_mib:.0f} MiB + first client {m.first_client_mib:.0f} MiB, each further "
        f"hosted client {m.client_mib:.1f} MiB, idle client state {m.idle_mib:.2f} MiB"
        + ("" if m.idle_all_in_mib is None else f" ({m.idle_all_in_mib:.2f} MiB in a whole run: used for virtual clients)")
        + f"; efficiency {m.efficiency:.2f}"
        + ("" if m.virtual_ratio is None else f"; virtual clients {m.virtual_ratio:.2f} of materialised samples/s"),
        f"assumed: {100 * a.participation:g} % of the clients train at once, each at {a.device_cpu:g} of a core; "
        f"target = {t}; client nodes {a.client_node_cpus} vCPU / {a.client_node_gib:g} GiB with "
        f"{a.client_units} client units; CPU shards {a.cpu_shard_node_cpus} per node; at most "
        f"{100 * a.memory_headroom:g} % of a node's memory used; "
        + ("virtual clients (one materialised client per worker process)" if a.virtual
           else "every client materialised (today's runtime)"),
        "not modelled: replica sync between shards (parameter averaging each epoch), the driver and the "
        "head node, network bandwidth between nodes (activations at B=4 are ~1 KB/sample).",
    ])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="1000,3000,10000,30000,100000", help="comma list of N")
    ap.add_argument("--results", type=Path, default=RESULTS / "sizing.json", help="benchmarks/sizing.py's JSON")
    ap.add_argument("--gpu-shard-sps", type=float, default=None, help="samples/s of one GPU shard (measured on a GPU)")
    ap.add_argument("--efficiency", type=float, default=None, help="cluster/local step throughput (default: measured)")
    ap.add_argument("--participation", type=float, default=0.1)
    ap.add_argument("--device-cpu", type=float, default=0.4)
    ap.add_argument("--target-sps", type=float, default=None)
    ap.add_argument("--client-node-cpus", type=int, default=8)
    ap.add_argument("--client-node-gib", type=float, default=16.0)
    ap.add_argument("--client-units", type=int, default=8)
    ap.add_argument("--cpu-shard-node-cpus", type=int, default=8)
    ap.add_argument("--memory-headroom", type=float, default=0.8)
    ap.add_argument("--virtual", action="store_true", help="virtual clients (idle ones held compactly)")
    a = ap.parse_args(argv)
    try:
        m = load_measured(a.results, a.gpu_shard_sps, a.efficiency)
        asm = Assumptions(participation=a.participation, device_cpu=a.device_cpu, target_sps=a.target_sps,
                          client_node_cpus=a.client_node_cpus, client_node_gib=a.client_node_gib,
                          client_units=a.client_units, cpu_shard_node_cpus=a.cpu_shard_node_cpus,
                          memory_headroom=a.memory_headroom, virtual=a.virtual)
        ns = [int(float(x)) for x in a.clients.split(",") if x.strip()]
        rows = [size(n, m, asm) for n in ns]
    except (ValueError, FileNotFoundError) as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    print(table(rows))
    print()
    print(assumptions_text(m, asm))
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["Measured", "Assumptions", "Sizing", "size", "load_measured", "table", "replace"]
