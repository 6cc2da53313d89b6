"""The Prune-Deprune paper's testbed (sec. 4.1), emulated: its runs, figures and table.

The paper: 8 data sources on a laptop, each capped at 40 % of a core, share one Wi-Fi
channel to an embedded GPU; batch 16, 32 batches, 4 epochs; VGG11 split after
[64, M, 128, M]; with the module (f = 4) and without. Figures 4-5: traffic on the Wi-Fi
channel and samples processed per source over time; figures 6-7: the same for one source
with batch 64 over Ethernet. Here each (setting, variant) is one cluster run on the
emulated network; the figures are built from the runs' step records
(:mod:`raysplit.records.timeline`).

Settings: ``wifi`` (``sources`` sources, one shared Wi-Fi cell) and ``ethernet``
(``ethernet_sources`` sources with batch ``ethernet_batch_size``, switched Ethernet).
Variants: ``none`` (no module), ``deprune`` (the authors' default 16 -> 128), ``fixed``
(B = 4, the paper's f = 4).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from raysplit.config.cli import option

SETTINGS = ("wifi", "ethernet")
VARIANTS = ("none", "deprune", "fixed")


@dataclass(frozen=True)
class TestbedConfig:
    """The paper's testbed, emulated.

    Args:
        settings: which of the paper's two setups to run: wifi (figs. 4-5) and/or ethernet (figs. 6-7).
        variants: none (without the module), deprune (budgets deprune_budgets), fixed (B = fixed_budget).
        sources: data sources in the wifi setting.
        batch_size: samples per batch in the wifi setting.
        ethernet_sources: data sources in the ethernet setting.
        ethernet_batch_size: samples per batch in the ethernet setting.
        batches: batches per epoch and source.
        epochs: epochs.
        source_cpu: each source's CPU cap (a fraction of one core).
        deprune_budgets: the deprune variant's budgets.
        deprune_epochs: its epochs per budget (they must add up to epochs).
        fixed_budget: the fixed variant's B.
        model: the network (the paper: vgg11, split after [64, M, 128, M]).
        dataset: the data (the paper: CIFAR-10; here Fashion-MNIST by default, 32 px).
        data_dir: data set folder (default: the system's).
        image_size: image side in px.
        test_subset: test images for the accuracy column.
        lr: SGD learning rate.
        wifi_link: the wifi setting's link (a link string: the built-in profile shares one cell).
        ethernet_link: the ethernet setting's link.
        link_mode: virtual (simulated clock) or realtime (transfers really wait).
        sim_compute: virtual mode's compute times: model, scaled or measured.
        device_gflops: one core of a data source, GFLOP/s (sim_compute model).
        server_gflops: the server, GFLOP/s (sim_compute model; the paper's is an embedded GPU).
        seed: the run's seed.
        out: where the runs and the figures go.
    """

    settings: tuple[str, ...] = field(default=SETTINGS, metadata=option(choices=SETTINGS))
    variants: tuple[str, ...] = field(default=VARIANTS, metadata=option(choices=VARIANTS))
    sources: int = 8
    batch_size: int = 16
    ethernet_sources: int = 1
    ethernet_batch_size: int = 64
    batches: int = 32
    epochs: int = 4
    source_cpu: float = 0.4
    deprune_budgets: tuple[int, ...] = (16, 128)
    deprune_epochs: tuple[int, ...] = (3, 1)
    fixed_budget: int = 4
    model: str = "vgg11"
    dataset: str = "fashion-mnist"
    data_dir: str | None = field(default=None, metadata=option(none_word="default"))
    image_size: int = 32
    test_subset: int = 500
    lr: float = 0.01
    wifi_link: str = "wifi"
    ethernet_link: str = "ethernet"
    link_mode: str = "virtual"
    sim_compute: str = "model"
    device_gflops: float = 50.0
    server_gflops: float = 1000.0
    seed: int = 0
    out: str = "runs/testbed"

    def __post_init__(self) -> None:
        for name, allowed in (("settings", SETTINGS), ("variants", VARIANTS)):
            vals = getattr(self, name)
            bad = [v for v in vals if v not in allowed]
            if bad or not vals:
                raise ValueError(f"{name} {list(vals)}: choose from {', '.join(allowed)}")
        if sum(self.deprune_epochs) != self.epochs and "deprune" in self.variants:
            raise ValueError(f"deprune_epochs {list(self.deprune_epochs)} must add up to epochs ({self.epochs})")
        for name in ("sources", "batch_size", "ethernet_sources", "ethernet_batch_size", "batches", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def replace(self, **changes) -> "TestbedConfig":
        return dataclasses.replace(self, **changes)

    def runs(self) -> list[tuple[str, str, object]]:
        """(setting, variant, ClusterConfig) of every run."""
        from raysplit.config import ClusterConfig, LinkConfig, SplitConfig, TrainConfig

        out = []
        for setting in self.settings:
            sources = self.sources if setting == "wifi" else self.ethernet_sources
            batch = self.batch_size if setting == "wifi" else self.ethernet_batch_size
            link = LinkConfig(link=self.wifi_link if setting == "wifi" else self.ethernet_link,
                              link_mode=self.link_mode, sim_compute=self.sim_compute,
                              device_gflops=self.device_gflops, server_gflops=self.server_gflops)
            for variant in self.variants:
                method, budgets, epochs = {
                    "none": ("none", (128,), (self.epochs,)),
                    "deprune": ("deprune", self.deprune_budgets, self.deprune_epochs),
                    "fixed": ("fixed", (self.fixed_budget,), (self.epochs,)),
                }[variant]
                train = TrainConfig(
                    method=method, split=SplitConfig(model=self.model, seed=self.seed), dataset=self.dataset,
                    data_dir=self.data_dir, image_size=self.image_size, budgets=budgets, epochs_per_budget=epochs,
                    lr=self.lr, gamma=1.0, batch_size=batch, train_subset=sources * self.batches * batch,
                    test_subset=self.test_subset, max_batches=self.batches, out=str(Path(self.out) / setting / variant),
                    tenant="testbed", run_id=f"testbed-{setting}-{variant}", progress=False, link=link,
                )
                out.append((setting, variant, ClusterConfig(train=train, clients=sources, client_cpu=self.source_cpu)))
        return out


def run_row(setting: str, variant: str, summary, rows: list[dict]) -> dict:
    """The table row of one run."""
    from raysplit.records.timeline import channel_traffic, source_throughput

    tp = source_throughput(rows)
    traffic = channel_traffic(rows)
    return {
        "setting": setting, "variant": variant, "budgets": list(summary.budgets),
        "sources": summary.clients, "final_test_accuracy": summary.final_test_accuracy,
        "bytes_up_per_sample": summary.bytes_up / max(summary.samples, 1),
        "channel_bytes": traffic[-1][1] if traffic else 0,
        "samples_per_s_per_source": sum(tp.values()) / len(tp) if tp else math.nan,
        "samples_per_s_total": sum(tp.values()) if tp else math.nan,
        "emulated_seconds": summary.sim_seconds, "wall_seconds": summary.wall_seconds,
    }


def with_ratios(table: list[dict]) -> list[dict]:
    """Traffic and throughput of every run against the same setting's ``none`` run."""
    base = {r["setting"]: r for r in table if r["variant"] == "none"}
    for r in table:
        b = base.get(r["setting"])
        r["traffic_reduction"] = b["channel_bytes"] / r["channel_bytes"] if b and r["channel_bytes"] else None
        r["throughput_gain"] = (r["samples_per_s_per_source"] / b["samples_per_s_per_source"]
                                if b and b["samples_per_s_per_source"] else None)
    return table


def figures(out: str | Path, runs: dict[tuple[str, str], list[dict]]) -> list[Path]:
    """PNG + Parquet of the paper's figures 4-7 (per setting) under ``out``."""
    from raysplit.records.timeline import (
        channel_traffic,
        clock,
        plot_samples,
        plot_throughput,
        plot_traffic,
        source_samples,
        source_throughput,
        write_parquet,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for setting in sorted({s for s, _ in runs}):
        mine = {v: rows for (s, v), rows in runs.items() if s == setting}
        xlabel = "emulated time (s)" if any(clock(r) == "sim_time" for r in mine.values()) else "wall time (s)"
        fig = {"wifi": ("4", "5"), "ethernet": ("6", "7")}[setting]
        label = {"none": "without module", "deprune": "with module, deprune", "fixed": "with module, B=4"}
        named = {label.get(v, v): rows for v, rows in mine.items()}
        written.append(plot_traffic(out / f"{setting}_traffic.png", named,
                                    f"Fig. {fig[0]} equivalent: traffic on the {setting} channel", xlabel))
        written.append(plot_samples(out / f"{setting}_samples.png", named,
                                    f"Fig. {fig[1]} equivalent: samples processed per source", xlabel))
        written.append(plot_throughput(out / f"{setting}_throughput.png", named, f"per-source throughput ({setting})"))
        written.append(write_parquet(out / f"{setting}_traffic.parquet", [
            {"variant": v, "time": t, "cumulative_bytes": b} for v, rows in mine.items() for t, b in channel_traffic(rows)]))
        written.append(write_parquet(out / f"{setting}_samples.parquet", [
            {"variant": v, "source": c, "time": t, "cumulative_samples": n}
            for v, rows in mine.items() for c, seq in source_samples(rows).items() for t, n in seq]))
        written.append(write_parquet(out / f"{setting}_throughput.parquet", [
            {"variant": v, "source": c, "samples_per_s": x}
            for v, rows in mine.items() for c, x in source_throughput(rows).items()]))
    return written


# The authors' own framework, measured on this machine (../shared/DESIGN.md, "Anchors to beat").
AUTHORS = {"bytes_up_per_sample_b4": 1129, "samples_per_s_one_source": 21.5, "samples_per_s_8_sources": 20.6,
           "peak_rss_gib_per_source": 2.1}


def markdown(table: list[dict]) -> str:
    cols = [("setting", "setting", ""), ("variant", "variant", ""), ("budgets", "budgets", ""),
            ("final_test_accuracy", "final acc", ".3f"), ("bytes_up_per_sample", "B up / sample", ",.0f"),
            ("channel_bytes", "channel MB", ""), ("traffic_reduction", "traffic vs none", ".1f"),
            ("samples_per_s_per_source", "samples/s per source", ".1f"), ("throughput_gain", "vs none", ".2f"),
            ("samples_per_s_total", "samples/s total", ".1f"), ("emulated_seconds", "emulated s", ".1f")]
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in table:
        cells = []
        for k, _, f in cols:
            v = r.get(k)
            if k == "channel_bytes":
                cells.append(f"{v / 1e6:.1f}")
            elif v is None or (isinstance(v, float) and v != v):
                cells.append("-")
            elif isinstance(v, list):
                cells.append(" → ".join(map(str, v)))
            else:
                cells.append(format(v, f) if f else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(out: str | Path, table: list[dict]) -> tuple[Path, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"runs": table, "authors_framework": AUTHORS}, indent=2,
                                                 default=str) + "\n")
    (out / "summary.md").write_text(markdown(table))
    return out / "summary.json", out / "summary.md"
