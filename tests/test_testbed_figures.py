"""The testbed's figures go where they are told, even into a folder that does not exist yet
(``benchmarks/testbed.py --out-dir NEW`` lost a finished run's figures to this once)."""

from raysplit.link.testbed import figures


def _rows(client: int, n: int) -> list[dict]:
    return [dict(client=client, sim_time=1.0 + i, compute_s=0.1, downlink_s=0.01, sim_server_s=0.02,
                 wire_bytes_up=1000, wire_bytes_down=500, samples=16) for i in range(n)]


def test_figures_create_their_folder_and_write_every_figure(tmp_path):
    out = tmp_path / "new" / "testbed"
    runs = {("ethernet", "none"): _rows(0, 3), ("ethernet", "fixed"): _rows(0, 3)}
    written = figures(out, runs)
    names = sorted(p.name for p in written)
    assert names == sorted(f"ethernet_{k}.{e}" for k in ("traffic", "samples", "throughput") for e in ("png", "parquet"))
    assert all(p.is_file() and p.stat().st_size > 0 for p in written)
