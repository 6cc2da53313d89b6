"""Prune-Deprune's prune (Algorithm 3) on a Ray cluster: one trained model per budget.

    python jobs/prune.py --clients 8                             # starts a local Ray
    ray job submit -- python jobs/prune.py --clients 8 --shards 2

Trains the full budget first, then transfers to each smaller budget in turn (resetPrune
and selectLr at every step down) and saves one loadable model per budget under
<out>/models/budget_<B>.pt (``raysplit.inference.load_model``). Defaults: budgets
128 -> 32 -> 4 over 4 + 2 + 2 epochs on the job's default data (the CPU-sized VGG, an
8,192-sample subset of Fashion-MNIST), so it finishes in minutes on 2 cores. Every option
is jobs/deprune.py's (``--help``) and can come from ``--config run.yaml``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # jobs/: the cluster job this one configures

import deprune  # noqa: E402
from deprune import config_from_argv  # noqa: E402,F401  (the same configuration as deprune's)

DEFAULTS = {"method": "prune", "budgets": "128,32,4", "epochs_per_budget": "4,2,2", "out": "runs/prune"}


def parser():
    return deprune.parser("jobs/prune.py", __doc__.split("\n\n")[0], defaults=DEFAULTS)


def main(argv: list[str] | None = None) -> int:
    return deprune.main(argv, parser())


if __name__ == "__main__":
    sys.exit(main())
