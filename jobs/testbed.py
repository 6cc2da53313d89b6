"""The Prune-Deprune paper's testbed (sec. 4.1, figs. 4-7) on the emulated network.

    python jobs/testbed.py                       # both settings, all three variants (~25 min on 2 cores)
    python jobs/testbed.py --settings wifi --variants none,fixed --link-mode realtime

Wi-Fi setting: 8 data sources, each capped at 40 % of a core, batch 16, 32 batches,
4 epochs, VGG11 split after [64, M, 128, M], all on one shared Wi-Fi cell. Ethernet
setting: 1 source, batch 64. Each variant (without the module; deprune 16 -> 128; B = 4)
is one cluster run under <out>/<setting>/<variant>/; the figures (traffic on the channel,
samples per source over time, per-source throughput: PNG + Parquet) and the summary
table go to <out>/.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Let `python jobs/testbed.py` work from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402

from raysplit.config.cli import ConfigParser  # noqa: E402
from raysplit.link.testbed import TestbedConfig, figures, markdown, run_row, with_ratios, write_table  # noqa: E402


def parser() -> ConfigParser:
    p = ConfigParser("jobs/testbed.py", __doc__.split("\n\n")[0], [("testbed", TestbedConfig)])
    p.parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS, else a local Ray)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    tb = p.build(TestbedConfig, p.parse(argv)[TestbedConfig])
    from raysplit.records.timeline import read_steps
    from raysplit.runtime.driver import run_cluster

    ray.init(address=p.namespace.address, log_to_driver=False)
    table, runs = [], {}
    try:
        for setting, variant, cc in tb.runs():
            print(f"[testbed] {setting} / {variant}: {cc.clients} sources, batch {cc.train.batch_size}, "
                  f"{cc.train.method} {list(cc.train.budgets)}", flush=True)
            try:
                summary, _ = run_cluster(cc)
            except (ValueError, FileNotFoundError) as e:
                p.parser.exit(2, f"{p.parser.prog}: error: {e}\n")
            rows = read_steps(cc.train.out)
            runs[(setting, variant)] = rows
            table.append(run_row(setting, variant, summary, rows))
    finally:
        ray.shutdown()
    table = with_ratios(table)
    figures(tb.out, runs)
    write_table(tb.out, table)
    print(markdown(table))
    print(f"figures and table: {Path(tb.out).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
