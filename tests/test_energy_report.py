"""report.html of an energy-split run directory: `python -m raysplit.report` and the job's
own call both come to raysplit.energy.report, finished or not."""

from __future__ import annotations

import dataclasses
import json

from raysplit.energy.records import EnergySummary, InferenceRow
from raysplit.energy.table import table_iii, table_iii_cells
from raysplit.records.writer import PartTable
from raysplit.report import build_report, load_run
from raysplit.report.__main__ import main as report_main

SIM = [{"bandwidth": w, "method": m, "energy_j": e, "processing_j": e / 2, "transmit_j": e / 2, "co2_kg": e * 7.6e-8}
       for w in (15e3, 5e6) for m, e in (("pool-1", 1e-3), ("PS", 3e-5))]


def row(client: int, batch: int, cut: int, correct: int) -> InferenceRow:
    z = dict.fromkeys(("pool1_processing_j", "pool1_transmit_j", "softmax_processing_j", "softmax_transmit_j",
                       "psnc_processing_j", "psnc_transmit_j", "input_transmit_j"), 1e-5)
    return InferenceRow(run="r", tenant="t", client=client, shard=0, batch=batch, samples=1, sim_time=float(batch),
                        gain=0.5, cut=cut, layer=["input", "conv1", "fc"][cut], sent_channels=4, bits=128,
                        bytes_up=60, tx_seconds=1e-3, compute_j=1e-6, memory_j=1e-6, processing_j=2e-6,
                        transmit_j=3e-6, energy_j=5e-6, co2_kg=3.8e-13, psnc_cut=1, correct=correct,
                        latency=0.01 * (batch + 1), **z)


def energy_run(tmp_path, finished: bool = True):
    (tmp_path / "config.json").write_text(json.dumps({"energy": {"draws": 7, "fading": "rayleigh", "power": 1e-3,
                                                                 "noise_psd": 1e-9}, "model": "mnist_cnn"}))
    prof = [{"layer": n, "params": 10, "processing_j": 1e-6, "output_elements": 8, "sent_elements": 4}
            for n in ("conv1", "fc")]
    (tmp_path / "profile.json").write_text(json.dumps({"original": prof, "compressed": prof}))
    (tmp_path / "simulated.json").write_text(json.dumps(SIM))
    t = PartTable(tmp_path / "inferences.parquet", InferenceRow)
    t.append([row(0, 0, 2, 1), row(0, 1, 2, 0), row(1, 0, 1, 1)])
    t.flush()
    if finished:
        s = EnergySummary(run="r", tenant="t", model="mnist_cnn", dataset="mnist", policy="ps", codec="float32",
                          clients=2, shards=1, bandwidth=5e6, original_accuracy=0.99, compressed_accuracy=0.98,
                          cluster_accuracy=2 / 3, compression_ratio=20.0, params_original=1000,
                          params_compressed=50, samples=3, messages=3, bytes_up=180, energy_j=5e-6,
                          processing_j=2e-6, transmit_j=3e-6, co2_kg=3.8e-13, cuts={"conv1": 1, "fc": 2},
                          table=[r for r in SIM if r["bandwidth"] == 5e6], simulated=SIM,
                          failed_clients={"2": "RuntimeError: boom"})
        (tmp_path / "summary.json").write_text(json.dumps(dataclasses.asdict(s)))
    return tmp_path


def test_table_iii_cells_and_markdown_agree():
    methods, cells = table_iii_cells(SIM)
    assert methods == ["pool-1", "PS"] and cells[0] == ["W = 15 kHz", "", ""]
    assert cells[1] == ["E (10^-4 J)", "10 (8.66)", "0.3 (1.69)"]  # the paper's figure in brackets
    assert table_iii_cells(SIM, paper=False)[1][1] == ["E (10^-4 J)", "10", "0.3"]
    md = table_iii(SIM).splitlines()
    assert md[2] == "| **W = 15 kHz** | | |" and md[3] == "| E (10^-4 J) | 10 (8.66) | 0.3 (1.69) |"
    assert len(md) == 2 + len(cells)


def test_energy_run_report_has_its_tables_and_says_failed_clients(tmp_path, capsys):
    run = energy_run(tmp_path)
    assert report_main([str(run)]) == 0
    html = (run / "report.html").read_text()
    for text in ("Table III (simulated)", "The cluster run", "10 (8.66)", "Per client", "Per layer",
                 "1 client failed", "RuntimeError: boom", "66.67 %", "conv1: 1, fc: 2", "7 channel draws"):
        assert text in html, text
    # per client: client 0 sent 2 messages at cut 2 ("fc"), half right
    assert "<td class=\"\">fc</td>" in html and "50.00 %" in html


def test_unfinished_energy_run_still_gets_a_report(tmp_path):
    run = energy_run(tmp_path, finished=False)
    html = build_report(load_run(run))
    assert "not finished" in html and "Table III (simulated)" in html and "Per client" in html
    assert "The cluster run" not in html
