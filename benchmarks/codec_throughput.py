"""Throughput and size of the wire codec (raysplit.codec) for every encoding x compression.

For each payload (a ReLU-like activation and its gradient) and each codec config this
measures encode and decode speed in MB/s of float32 input (1 MB = 1e6 bytes of the
(N, B, *spatial) float32 values), the bytes per message, and the size relative to the
raw float32 payload. Timing: each repeat runs the call enough times to last at least
--min-time seconds; the reported time per call is the median over --repeats repeats.

    python benchmarks/codec_throughput.py --repeats 15 --out benchmarks/results/codec_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from raysplit import codec  # noqa: E402

HERE = Path(__file__).resolve().parent


def make_payloads(n: int, c: int, b: int, spatial: tuple[int, ...], seed: int) -> dict:
    """A ReLU-like activation (about half zeros, per-channel scale and offset, positive
    part heavy-tailed like post-BN-ReLU features) and the matching gradient (dense small
    values, zero where the ReLU was off)."""
    rng = np.random.default_rng(seed)
    bshape = (1, c) + (1,) * len(spatial)
    sigma = rng.lognormal(0.0, 0.5, size=bshape).astype(np.float32)
    mu = (rng.normal(0.0, 0.15, size=bshape) * sigma).astype(np.float32)
    pre = rng.standard_normal((n, c, *spatial)).astype(np.float32) * sigma + mu
    act = np.maximum(pre, 0.0)
    grad = (rng.standard_normal(act.shape) * 1e-3).astype(np.float32) * (act > 0)
    idx = rng.permutation(c)[:b]  # importance order, not sorted
    return {
        "activation": (np.ascontiguousarray(act[:, idx]), idx, np.arange(n) % 10),
        "gradient": (np.ascontiguousarray(grad[:, idx]), idx, None),
        "zero_fraction": float((act == 0).mean()),
    }


def time_call(fn, repeats: int, min_time: float) -> float:
    """Median seconds per call."""
    fn()  # warm-up
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(min_time / one))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=15, help="timed repeats per measurement (median)")
    ap.add_argument("--min-time", type=float, default=0.02, help="minimum seconds per repeat")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "codec_throughput.json")
    ap.add_argument("--n", type=int, default=64, help="batch size N")
    ap.add_argument("--channels", type=int, default=128, help="channels C")
    ap.add_argument("--budget", type=int, default=32, help="channels sent B")
    ap.add_argument("--spatial", type=int, nargs="*", default=[8, 8], help="spatial dims (H W)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--payloads", default="activation,gradient", help="comma list: activation,gradient")
    args = ap.parse_args(argv)

    spatial = tuple(args.spatial)
    shape = (args.n, args.channels, *spatial)
    data = make_payloads(args.n, args.channels, args.budget, spatial, args.seed)
    raw32 = codec.payload_nbytes(args.n, args.budget, spatial, "float32")
    rows = []
    for payload in [p.strip() for p in args.payloads.split(",") if p.strip()]:
        values, idx, labels = data[payload]
        kind = codec.KIND_ACTIVATION if payload == "activation" else codec.KIND_GRADIENT
        for enc in codec.ENCODINGS:
            for comp in codec.COMPRESSIONS:
                cfg = codec.CodecConfig(enc, comp)
                buf = codec.encode(values, idx, shape, cfg, kind=kind, labels=labels, step=1, client_id=0)
                msg = codec.decode(buf)
                err = np.abs(msg.values - values)
                t_enc = time_call(
                    lambda: codec.encode(values, idx, shape, cfg, kind=kind, labels=labels, step=1),
                    args.repeats, args.min_time,
                )
                t_dec = time_call(lambda: codec.decode(buf), args.repeats, args.min_time)
                rows.append(
                    {
                        "payload": payload,
                        "codec": cfg.spec,
                        "encoding": enc,
                        "compression": comp,
                        "bytes_per_message": len(buf),
                        "theoretical_payload_bytes": codec.payload_nbytes(args.n, args.budget, spatial, enc),
                        "ratio_vs_float32_raw": len(buf) / raw32,
                        "compression_factor_vs_float32_raw": raw32 / len(buf),
                        "encode_us": t_enc * 1e6,
                        "decode_us": t_dec * 1e6,
                        "encode_MBps": raw32 / t_enc / 1e6,
                        "decode_MBps": raw32 / t_dec / 1e6,
                        "max_abs_error": float(err.max()),
                        "rel_rmse": float(np.sqrt((err**2).mean()) / max(np.sqrt((values**2).mean()), 1e-30)),
                    }
                )

    result = {
        "benchmark": "codec_throughput",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "setup": {
            "shape": list(shape),
            "n_selected": args.budget,
            "float32_raw_payload_bytes": raw32,
            "activation_zero_fraction": data["zero_fraction"],
            "labels": "activation messages carry N int labels; gradients none",
            "MB": "1e6 bytes of float32 input (N*B*prod(spatial)*4)",
            "timing": f"median of {args.repeats} repeats, each >= {args.min_time} s of back-to-back calls",
            "repeats": args.repeats,
            "seed": args.seed,
        },
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pyarrow": pa.__version__,
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
        },
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"shape {shape}, B={args.budget}, float32 raw payload {raw32} B, "
        f"activation zeros {data['zero_fraction']:.0%}; median of {args.repeats} repeats"
    )
    hdr = f"{'payload':<11} {'codec':<13} {'enc MB/s':>9} {'dec MB/s':>9} {'enc us':>8} {'dec us':>8} {'bytes/msg':>10} {'vs f32':>7} {'max err':>9}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(
            f"{r['payload']:<11} {r['codec']:<13} {r['encode_MBps']:>9.0f} {r['decode_MBps']:>9.0f} "
            f"{r['encode_us']:>8.0f} {r['decode_us']:>8.0f} {r['bytes_per_message']:>10d} "
            f"{r['ratio_vs_float32_raw']:>7.3f} {r['max_abs_error']:>9.2e}"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
