"""The short table printed at the end of a run."""

from __future__ import annotations

import math

from raysplit.records.rows import Summary


def human_bytes(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    e = min(int(math.log(n, 1024)), 3)
    return f"{n / 1024**e:.2f} {'BKMG'[e]}iB"


def format_summary(s: Summary) -> str:
    rows = [
        ("method", s.method),
        ("dataset / model", f"{s.dataset} / {s.model} (split after layer {s.split_layer})"),
        ("budgets x epochs", f"{s.budgets} x {s.epochs_per_budget}"),
        ("codec", s.codec),
    ]
    if s.clients is not None:
        per = "" if s.client_actors is None else f" in {s.client_actors} actor process{'es' if s.client_actors != 1 else ''}"
        rows.append(("clients", f"{s.clients}{per}"))
        rows += [("shards", str(s.shards)), ("mode", str(s.mode))]
    if s.placement:
        p = s.placement
        shard_nodes, host_nodes = set(p["shards"].values()), {h["node"] for h in p["hosts"]}
        rows.append(("nodes", f"{len(shard_nodes | host_nodes)} (shards on {len(shard_nodes)}, client processes on "
                              f"{len(host_nodes)}; placement {p['strategy']})"))
    if s.virtual:
        v = s.virtual
        rows.append(("virtual clients", f"{v['slots']} materialised at once; {v['materialisations']} materialisations, "
                                        f"{v['materialise_ms']:.2f} ms each; {human_bytes(v['parked_bytes_per_client'])} "
                                        f"parked per client"))
    rows += [
        ("final test accuracy", f"{100 * s.final_test_accuracy:.2f} %"),
        ("bytes up / down", f"{human_bytes(s.bytes_up)} / {human_bytes(s.bytes_down)}"),
        ("samples", f"{s.samples}"),
        ("wall time", f"{s.wall_seconds:.1f} s (start-up {s.startup_seconds:.1f} s)"),
        ("samples/s (training)", f"{s.samples / max(s.train_seconds, 1e-9):.1f}"),
    ]
    if s.sim_seconds is not None:
        rows.append((f"emulated time ({s.link_mode})", f"{s.sim_seconds:.1f} s"))
    if s.target_accuracy is not None:
        tta = "not reached" if s.time_to_accuracy is None else f"{s.time_to_accuracy:.1f} s"
        rows.append((f"time to {100 * s.target_accuracy:g} % accuracy", tta))
    if s.models:
        rows.append(("models", ", ".join(s.models)))
    if s.failed_clients:
        rows.append(("failed clients", ", ".join(f"{c}: {e}" for c, e in s.failed_clients.items())))
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)
