"""python -m raysplit.report RUN_DIR [--out FILE]: write the run's self-contained report.html."""

from __future__ import annotations

import argparse
import sys
import time

from raysplit.report import REPORT_NAME, write_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser("python -m raysplit.report", description=__doc__.split(":", 1)[1].strip())
    p.add_argument("run_dir", help="a run directory (jobs' --out; finished or not)")
    p.add_argument("--out", default=None, help=f"where to write the page (default RUN_DIR/{REPORT_NAME})")
    a = p.parse_args(argv)
    t = time.perf_counter()
    try:
        path = write_report(a.run_dir, a.out)
    except FileNotFoundError as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    print(f"wrote {path} ({path.stat().st_size / 1024:,.0f} KiB, {time.perf_counter() - t:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
