"""Serve a trained split model: the tail as a Ray Serve deployment (batched replicas), the
head and compression module on emulated edge clients with their own links.

    python jobs/serve.py --model runs/nair --replicas 2 --clients 8 --deadline 300ms
    python jobs/serve.py --model runs/prune --budget 4 --links "250kbit;lte;wifi"
    python jobs/serve.py --model runs/nair --clients 0 --http-port 8100   # serve until Ctrl-C

--model is a model file or a run directory (jobs/nair.py: models/nair.pt; --method prune:
one model per budget; deprune, fixed, none: the final model, saved with --save-model). Each request carries its
budget: NAIR slices, compression-module channels B, or the cut layer (a model without the
module), fixed (--budget) or chosen per request from the client's link and --deadline.
Writes requests.json and summary.json under --out and prints the summary.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

# Let `python jobs/serve.py` work from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402

from raysplit.config.cli import ConfigParser  # noqa: E402
from raysplit.config.serve import ClientsConfig, ServeConfig  # noqa: E402


def parser() -> ConfigParser:
    p = ConfigParser("jobs/serve.py", __doc__.split("\n\n")[0],
                     [("serving", ServeConfig), ("clients", ClientsConfig)])
    p.parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS, else a local Ray)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    values = p.parse(argv)
    scfg = p.build(ServeConfig, values[ServeConfig])
    ccfg = p.build(ClientsConfig, values[ClientsConfig])
    from raysplit.data import load_dataset
    from raysplit.serving.app import start
    from raysplit.serving.emulate import run_clients
    from raysplit.serving.model import load_served

    try:
        served = load_served(scfg.model, variant=scfg.variant)  # fail early, before Ray starts
        if ccfg.budget is not None:
            served.check_budget(ccfg.budget)
    except (ValueError, FileNotFoundError) as e:
        p.parser.exit(2, f"{p.parser.prog}: error: {e}\n")
    ray.init(address=p.namespace.address, log_to_driver=False)
    tail = start(scfg)
    try:
        print(f"serving {scfg.model} ({served.kind} budgets {_span(served.budgets())}) as {scfg.name!r}: "
              f"{scfg.replicas} replica(s), batches of up to {scfg.max_batch_size}"
              + (f", HTTP on 127.0.0.1:{scfg.http_port}/{scfg.name}" if scfg.http_port else ""), flush=True)
        if ccfg.clients == 0:
            print("serving until interrupted (Ctrl-C)", flush=True)
            while True:
                time.sleep(3600)
        size = ccfg.image_size or served.model.split.input_shape[-1]
        test = load_dataset(ccfg.dataset, "test", ccfg.data_dir, image_size=size, seed=0)
        rows, summary = run_clients(scfg, ccfg, test)
        summary["replica_stats"] = tail.stats()
        out = Path(ccfg.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "requests.json").write_text(json.dumps(rows))
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        print(json.dumps({k: v for k, v in summary.items() if k not in ("replica_stats",)}, indent=2, default=str))
        print(f"run directory: {os.path.abspath(out)}")
    except KeyboardInterrupt:
        pass
    finally:
        tail.shutdown()
        from ray import serve

        serve.shutdown()
        ray.shutdown()
    return 0


def _span(b: tuple[int, ...]) -> str:
    return ", ".join(map(str, b)) if len(b) <= 8 else f"{min(b)}..{max(b)}"


if __name__ == "__main__":
    sys.exit(main())
