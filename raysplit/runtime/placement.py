"""Where and how the actors run: pure functions of the cluster's size and the config.

Hosting (clients per process), the actors' memory mode and OpenMP spin, and each
client's Ray CPU share. The numbers come from ``benchmarks/scaling.py`` and
``benchmarks/pipeline_efficiency.py``.
"""

from __future__ import annotations

import math

# glibc malloc settings for the actors (ClusterConfig.malloc). "lean": tensors over
# 64 KiB are mmap'ed and go back to the OS when freed, so an idle client holds less,
# at the price of tens of thousands of page faults per step (25-55 % slower steps,
# benchmarks/pipeline_efficiency.py). "fast": two arenas (bounded growth) and high
# mmap/trim thresholds, so activations reuse heap memory step after step without page
# faults. Memory per tenant is bounded by grouping clients into processes (hosting).
MALLOC_ENV = {
    "lean": {"MALLOC_MMAP_THRESHOLD_": "65536"},
    "fast": {
        "MALLOC_ARENA_MAX": "2",
        "MALLOC_MMAP_THRESHOLD_": str(256 << 20),
        "MALLOC_TRIM_THRESHOLD_": str(512 << 20),
    },
}

# Beyond this many client processes per CPU, extra processes only time-share the cores
# while each costs its own torch (measured: 32 clients on 2 cores ran 221 samples/s as 32
# processes and 287 as 8; benchmarks/scaling.py).
PROCESSES_PER_CPU = 4


def max_client_processes(cpus: float) -> int:
    """The most client processes worth running on ``cpus`` (a CPU-less head counts as 1)."""
    return max(1, int(PROCESSES_PER_CPU * max(cpus, 1.0)))


def hosting(setting: int | str, clients: int, cpus: float) -> int:
    """Clients per actor process. "auto": one each up to max_client_processes; above
    that the fewest per process that keeps the process count within it."""
    if setting != "auto":
        return int(setting)
    return -(-clients // max_client_processes(cpus))


def malloc_mode(setting: str) -> str:
    """"auto" is "fast": page faults on every step cost more than the memory they save,
    and malloc_trim hands an idle client's heap back without them."""
    return "fast" if setting == "auto" else setting


def actor_env(malloc: str, openmp_spin: int | None) -> dict:
    """The actors' runtime_env: malloc mode and OpenMP spin."""
    env = dict(MALLOC_ENV[malloc])
    if openmp_spin is not None:
        env["GOMP_SPINCOUNT"] = str(openmp_spin)
    return {"env_vars": env}


def client_num_cpus(cap: float | None, clients: int, cpus: float, shard_cpus: float, shards: int) -> float:
    """Ray's scheduling share per client: its cap (0.25 uncapped), scaled down when the
    clients would not fit next to the shards (many tenants emulated on one machine)."""
    want = cap if cap is not None else 0.25
    free = max(cpus - shard_cpus * shards, 0.0)
    fit = 0.9 * free / clients if free > 0 else 0.0
    share = min(want, fit) if fit > 0 else 0.0
    return math.floor(share * 1000) / 1000  # Ray accepts 4 decimals; stay below


def shard_of(client: int, shards: int) -> int:
    """Client c trains against shard c % shards."""
    return client % shards
