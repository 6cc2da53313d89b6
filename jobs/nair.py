"""NAIR: importance-ordered slices of the split activation, one tail, zero padding
(Xiao et al.), against the original split, a CLIO-style baseline and the compression module.

    python jobs/nair.py                                                  # original + NAIR
    python jobs/nair.py --variants original,clio,nair,nair-no-penalty,nair-no-weights,module
    python jobs/nair.py --model mobilenet_v2 --dataset cifar10 --data-dir ~/data/cifar10 \\
        --train-subset all --test-subset all --original-epochs 200 --epochs 20 --slices 12 --device cuda

Trains (or loads with --original) the split model, fine-tunes each variant, and measures
accuracy against the transmission deadline on --link (default 250 kbit/s, the paper's),
every test image one request. Writes the run directory (--out, default runs/nair):
models/<variant>.pt (loadable with raysplit.inference.load_model and servable with
jobs/serve.py), table.md, deadlines.json, finetune.json, accuracy_latency.png, summary.json.
Every option can also come from a YAML file (--config run.yaml).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Let `python jobs/nair.py` work from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from raysplit.config import SplitConfig  # noqa: E402
from raysplit.config.cli import ConfigParser  # noqa: E402
from raysplit.config.nair import NairConfig  # noqa: E402


def parser() -> ConfigParser:
    return ConfigParser("jobs/nair.py", __doc__.split("\n\n")[0], [("nair", NairConfig), ("network", SplitConfig)])


def main(argv: list[str] | None = None) -> int:
    p = parser()
    values = p.parse(argv)
    split = p.build(SplitConfig, values[SplitConfig])
    cfg = p.build(NairConfig, values[NairConfig])
    from raysplit.nair import run

    try:
        run(cfg, split.replace(use_module=False))
    except (ValueError, FileNotFoundError) as e:  # bad values found once the data is known
        p.parser.exit(2, f"{p.parser.prog}: error: {e}\n")
    print(f"run directory: {os.path.abspath(cfg.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
