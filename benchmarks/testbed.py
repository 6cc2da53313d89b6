"""The paper's testbed (Prune-Deprune sec. 4.1), emulated, beside the authors' framework.

1. Emulated (virtual mode, modelled compute: reproducible): jobs/testbed.py's runs, both
   settings (8 sources on one shared Wi-Fi cell, batch 16; 1 source on Ethernet, batch
   64), each without the module, with deprune 16 -> 128, and with B = 4. Figures 4-7 as
   PNG + Parquet and the table under benchmarks/results/testbed/. Targets: >= 25x less
   traffic at B = 4 than without the module; >= 5x more samples/s per source when the
   link is the bottleneck (the Wi-Fi cell).
2. Measured on this machine (realtime mode, each source really capped at 40 % of a core,
   the link "ethernet"): the 8-source shape with B = 4 and without the module; samples/s
   in wall time and the session's peak memory per source, beside the authors' framework
   measured on this machine (../shared/DESIGN.md: 1,129 B/sample up at B = 4, 21.5
   samples/s for one source, 20.6 for eight, ~2.1 GB peak RSS per source).

    python benchmarks/testbed.py --no-measured     # 1. only (reproducible; ~25 min on 2 cores)
    quiet python benchmarks/testbed.py --only-measured   # 2. only, on a quiet machine (~5 min)
    python benchmarks/testbed.py --quick           # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "testbed"
QUICK = dict(sources=2, batches=3, epochs=2, deprune_epochs=(1, 1), dataset="digits", image_size=16,
             model="vgg_small", test_subset=64, ethernet_batch_size=32)


def emulated(tb, out: Path) -> list[dict]:
    from raysplit.link.testbed import figures, run_row, with_ratios, write_table
    from raysplit.records.timeline import read_steps
    from raysplit.runtime.driver import run_cluster

    table, runs = [], {}
    for setting, variant, cc in tb.runs():
        print(f"- emulated {setting} / {variant} ...", flush=True)
        s, _ = C.retry_on_ray_failure(run_cluster, cc)
        rows = read_steps(cc.train.out)
        runs[(setting, variant)] = rows
        table.append(run_row(setting, variant, s, rows))
        print(f"  {table[-1]['samples_per_s_per_source']:.1f} samples/s per source (emulated), "
              f"{table[-1]['channel_bytes'] / 1e6:.1f} MB on the channel", flush=True)
    table = with_ratios(table)
    figures(out, runs)
    write_table(out, table)
    return table


def measured(tb, epochs: int) -> list[dict]:
    """Realtime, real 40 % caps, loopback-like Ethernet: wall samples/s and memory."""
    from raysplit.link.testbed import run_row
    from raysplit.records.timeline import read_steps
    from raysplit.runtime.driver import run_cluster

    real = tb.replace(settings=("wifi",), variants=tuple(v for v in ("none", "fixed") if v in tb.variants),
                      wifi_link="ethernet", link_mode="realtime", epochs=epochs,
                      deprune_epochs=(epochs,), out=str(Path(tb.out) / "measured"))
    out = []
    for setting, variant, cc in real.runs():
        print(f"- measured (realtime, real caps) {variant} ...", flush=True)
        C.wait_for_quiet(30)
        with C.Monitor() as mon:
            s, cluster = C.retry_on_ray_failure(run_cluster, cc)
        mem = mon.result()
        row = run_row("measured", variant, s, read_steps(cc.train.out))
        wall_sps = s.samples / s.train_seconds
        row.update(wall_samples_per_s_total=wall_sps, wall_samples_per_s_per_source=wall_sps / cc.clients,
                   peak_pss_gib=mem["peak_pss_gib"], peak_pss_gib_per_source=mem["peak_pss_gib"] / cc.clients,
                   cap_mechanism=s.cap_mechanism, foreign_cpu_cores=mem["foreign_cpu_cores"])
        print(f"  {wall_sps:.1f} samples/s in total (wall), peak PSS {mem['peak_pss_gib']:.2f} GiB, "
              f"cap {s.cap_mechanism}", flush=True)
        out.append(row)
    return out


def main(argv=None) -> int:
    from raysplit.link.testbed import AUTHORS, TestbedConfig, markdown

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run on digits with 2 sources")
    ap.add_argument("--measured-epochs", type=int, default=1, help="epochs of the measured (realtime) runs")
    ap.add_argument("--no-measured", action="store_true", help="skip the realtime measurement on this machine")
    ap.add_argument("--only-measured", action="store_true",
                    help="only the realtime measurement (results: testbed_measured.json)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="epochs of the emulated runs (default the paper's 4; deprune: all but the last at 16)")
    ap.add_argument("--settings", default="wifi,ethernet", help="the emulated settings to run (wifi: figs. 4-5, "
                    "ethernet: figs. 6-7)")
    ap.add_argument("--out-dir", type=Path, default=None)
    a = ap.parse_args(argv)
    out_dir = a.out_dir or C.RESULTS
    fig_dir = Path(out_dir) / NAME
    # the runs' own directories are scratch: the figures and the table are the results
    settings = tuple(x for x in a.settings.split(",") if x)
    try:
        kw = dict(QUICK if a.quick else {})
        if a.epochs is not None:
            kw.update(epochs=a.epochs, deprune_epochs=(a.epochs - 1, 1) if a.epochs > 1 else (1,))
        tb = TestbedConfig(out=tempfile.mkdtemp(prefix="raysplit-bench-testbed-"), settings=settings, **kw)
    except ValueError as e:
        ap.error(str(e))
    machine = C.machine_info()
    import ray

    C.ray_init_quiet()
    t0 = time.perf_counter()
    try:
        table = [] if a.only_measured else emulated(tb, fig_dir)
        real = [] if a.no_measured else measured(tb, a.measured_epochs)
    finally:
        ray.shutdown()
    wifi = {r["variant"]: r for r in table if r["setting"] == "wifi"}
    targets = {}
    if "fixed" in wifi and "none" in wifi:
        targets = {"traffic_reduction_b4": wifi["fixed"]["traffic_reduction"], "traffic_target": 25.0,
                   "throughput_gain_b4_wifi": wifi["fixed"]["throughput_gain"], "throughput_target": 5.0}
    md = [f"# {NAME}", ""] + (["## Emulated (virtual mode)", "", markdown(table)] if table else [])
    if targets:
        md += [f"Traffic at B=4 vs without the module (Wi-Fi): {targets['traffic_reduction_b4']:.1f}x "
               f"(target >= 25x); samples/s per source: {targets['throughput_gain_b4_wifi']:.2f}x (target >= 5x).", ""]
    if real:
        md += ["## Measured on this machine (realtime, real caps, Ethernet profile)", "",
               C.md_table(real, [("variant", "variant", ""), ("bytes_up_per_sample", "B up / sample", ",.0f"),
                                 ("wall_samples_per_s_per_source", "samples/s per source", ".1f"),
                                 ("wall_samples_per_s_total", "samples/s total", ".1f"),
                                 ("peak_pss_gib_per_source", "peak PSS GiB / source", ".2f"),
                                 ("cap_mechanism", "cap", "")]),
               "", f"The authors' framework on this machine: {AUTHORS}", ""]
    C.write_results(NAME + ("_measured" if a.only_measured else ""),
                    {"machine": machine, "args": vars(a), "testbed": dataclasses.asdict(tb), "emulated": table, "measured": real, "targets": targets,
                           "authors_framework": AUTHORS, "seconds": time.perf_counter() - t0, "when": C.now_iso()},
                    "\n".join(md), out_dir)
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
