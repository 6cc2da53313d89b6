"""Energy-aware split inference (Krouka et al.) on a Ray cluster.

    python jobs/energy_split.py --clients 4                          # starts a local Ray
    ray job submit -- python jobs/energy_split.py --clients 4        # on a running cluster

Trains the paper's MNIST CNN twice (plain, and with L1 sparsification, eq. 10), prunes
the second by threshold, prices every cut with the energy model, prints Table III
(pool-1, softmax, PS, PSNC at 15 kHz, 5 MHz and 15 MHz, simulated), then runs the
clients: each picks its cut per message for its own fading channel and a shard holding
the whole model runs the rest. Every option can also come from --config run.yaml.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Let `python jobs/energy_split.py` work from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402

from raysplit.config.cli import ConfigParser  # noqa: E402
from raysplit.config.energy import EnergyConfig, EnergySplitConfig  # noqa: E402


def parser() -> ConfigParser:
    p = ConfigParser("jobs/energy_split.py", __doc__.split("\n\n")[0],
                     [("job", EnergySplitConfig), ("energy model", EnergyConfig)])
    p.parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS, else a local Ray)")
    return p


def config_from_argv(p: ConfigParser, argv: list[str] | None) -> EnergySplitConfig:
    values = p.parse(argv)
    energy = p.build(EnergyConfig, values[EnergyConfig])
    return p.build(EnergySplitConfig, values[EnergySplitConfig], energy=energy)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    cfg = config_from_argv(p, argv)
    from raysplit.energy.run import format_summary, run_energy_split

    # Bare init: joins the cluster under `ray job submit` (RAY_ADDRESS), else starts one.
    ray.init(address=p.namespace.address, log_to_driver=True)
    try:
        summary = run_energy_split(cfg)
    except (ValueError, FileNotFoundError) as e:  # bad values found once the data is known
        p.parser.exit(2, f"{p.parser.prog}: error: {e}\n")
    finally:
        ray.shutdown()
    print(format_summary(summary, Path(cfg.out)))
    print(f"run directory: {os.path.abspath(cfg.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
