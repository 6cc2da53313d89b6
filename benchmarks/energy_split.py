"""Energy-aware split (Krouka et al.): the per-layer profile (their Fig. 3), compression
ratio vs accuracy vs energy (Fig. 5), and Table III (pool-1, softmax, PS, PSNC at each
bandwidth), on MNIST with the paper's CNN.

    python benchmarks/energy_split.py                  # full MNIST, 3 + 3 epochs: ~12 min on 2 cores
    python benchmarks/energy_split.py --models-from runs/energy_split   # reuse a job's models
    python benchmarks/energy_split.py --quick          # smoke run

Trains the original model (plain loss) and the sparsified one (eq. 10 from the original),
prunes at each threshold, and simulates the per-inference choice over the same channel
draws for every method. Writes benchmarks/results/energy_split.json (and .md).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "energy_split"


def floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-subset", type=int, default=None, help="training samples (default: all 60,000)")
    p.add_argument("--test-subset", type=int, default=None, help="test samples (default: all 10,000)")
    p.add_argument("--epochs", type=int, default=3, help="epochs of the original model")
    p.add_argument("--sparse-epochs", type=int, default=3, help="epochs of eq. 10 from the original model")
    p.add_argument("--l1", type=float, default=1e-4, help="1 - mu of eq. 10 (the paper's mu = 0.9999)")
    p.add_argument("--threshold", type=float, default=0.02, help="pruning threshold of the Table III model")
    p.add_argument("--thresholds", type=floats, default=(0.005, 0.01, 0.02, 0.03, 0.05),
                   help="pruning thresholds of the compression sweep")
    p.add_argument("--bandwidths", type=floats, default=(15e3, 5e6, 15e6))
    p.add_argument("--sweep-bandwidth", type=float, default=5e6, help="W of the compression sweep's energies")
    p.add_argument("--draws", type=int, default=1000, help="channel draws per bandwidth")
    p.add_argument("--codecs", default="float32,float16,int8", help="wire encodings priced at --sweep-bandwidth")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models-from", type=Path, default=None, help="a jobs/energy_split.py run directory to reuse")
    p.add_argument("--quick", action="store_true", help="smoke run: 512 train / 200 test samples, 1 + 1 epochs, "
                   "100 draws (unless given explicitly)")
    p.add_argument("--out-dir", type=Path, default=None, help="folder for energy_split.json / .md "
                   "(default: benchmarks/results)")
    a = p.parse_args(argv)
    if a.quick:
        p.set_defaults(train_subset=512, test_subset=200, epochs=1, sparse_epochs=1, draws=100)
        a = p.parse_args(argv)

    from raysplit.config.energy import EnergyConfig
    from raysplit.data import load_dataset
    from raysplit.energy.choice import CutPlanner
    from raysplit.energy.profile import profile_model
    from raysplit.energy.run import load_model_file
    from raysplit.energy.simulate import simulate
    from raysplit.energy.sparsify import compression_ratio, nonzero, prune
    from raysplit.energy.table import layer_table, table_iii
    from raysplit.energy.train import accuracy, train_both
    from raysplit.models.whole import whole_model
    from raysplit.training.state import load_numpy_state

    machine = C.machine_info()
    e = EnergyConfig(bandwidths=a.bandwidths, draws=a.draws)
    costs = e.hardware()
    kw = {"seed": 0, "image_size": 28}
    train = load_dataset("mnist", "train", limit=a.train_subset, **kw)
    test = load_dataset("mnist", "test", limit=a.test_subset, **kw)
    shape = train.input_shape
    t0 = time.perf_counter()
    if a.models_from is not None:
        loaded = [load_model_file(a.models_from / "models" / f"{n}.pt", model="mnist_cnn", input_shape=shape,
                                  num_classes=10)["state"] for n in ("original", "sparse")]
        original, sparse = loaded
        trained = {"from": str(a.models_from)}
    else:
        o, s = train_both("mnist_cnn", train, test, epochs=a.epochs, sparse_epochs=a.sparse_epochs, mu=1 - a.l1,
                          threads=a.threads)
        original, sparse = o.state, s.state
        trained = {"original_epoch_loss": o.epoch_loss, "sparse_epoch_loss": s.epoch_loss,
                   "seconds": time.perf_counter() - t0}
    print(f"models ready in {time.perf_counter() - t0:.0f} s", flush=True)

    def model_of(state):
        m = whole_model("mnist_cnn", shape, 10)
        load_numpy_state(m.layers, state)
        return m

    def planner(state, codec="float32"):
        return CutPlanner(profile_model("mnist_cnn", model_of(state).layers, shape), costs, codec, e.bits, e.power,
                          e.block_s)

    dense = planner(original)
    acc_original = accuracy(model_of(original), test)
    print(f"original: accuracy {acc_original:.4f}", flush=True)

    # Fig. 5: compression ratio vs accuracy vs mean energy (PS and PSNC at one bandwidth)
    sweep = []
    for thr in a.thresholds:
        pruned = prune(sparse, thr)
        res = {r.method: r for r in simulate({"compressed": planner(pruned), "original": dense},
                                             e.radio(a.sweep_bandwidth), e.draws_config(), e.carbon_index)}
        sweep.append({"threshold": thr, "compression_ratio": compression_ratio(original, pruned),
                      "params": nonzero(pruned), "accuracy": accuracy(model_of(pruned), test),
                      "ps_energy_j": res["PS"].energy_j, "psnc_energy_j": res["PSNC"].energy_j,
                      "softmax_energy_j": res["softmax"].energy_j, "ps_mean_cut": res["PS"].mean_cut})
        print(f"threshold {thr:g}: C_r {sweep[-1]['compression_ratio']:.1f}, accuracy {sweep[-1]['accuracy']:.4f}, "
              f"PS E {res['PS'].energy_j:.3e} J", flush=True)

    # Table III and Fig. 3 at the chosen threshold
    compressed = prune(sparse, a.threshold)
    comp = planner(compressed)
    table = []
    for w in a.bandwidths:
        for r in simulate({"compressed": comp, "original": dense}, e.radio(w), e.draws_config(), e.carbon_index):
            table.append({"bandwidth": w, **dataclasses.asdict(r)})
    layers = {"original": dense.profile.layer_table(costs), "compressed": comp.profile.layer_table(costs)}
    codecs = []
    for enc in a.codecs.split(","):
        pair = {"compressed": planner(compressed, enc), "original": planner(original, enc)}
        res = {r.method: r for r in simulate(pair, e.radio(a.sweep_bandwidth), e.draws_config(), e.carbon_index)}
        codecs.append({"codec": enc, **{f"{m}_energy_j": res[m].energy_j for m in ("pool-1", "softmax", "PS", "PSNC")},
                       "ps_mean_cut": res["PS"].mean_cut})
    acc_comp = accuracy(model_of(compressed), test)

    how = (f"models from {a.models_from} (its config.json says how they were trained)" if a.models_from else
           f"{a.epochs} epochs of Adam (lr 1e-3, batch 64) on the plain loss, then {a.sparse_epochs} more of it (the "
           f"original) and of eq. 10 with 1 - mu = {a.l1:g} (the compressed)")
    head = (f"MNIST ({len(train)} train / {len(test)} test, 28 px), mnist_cnn; {how}. Original: test accuracy "
            f"{acc_original:.4f}; compressed, pruned at {a.threshold:g}: "
            f"C_r {compression_ratio(original, compressed):.1f}, "
            f"accuracy {acc_comp:.4f}. Energy model defaults: float32 arithmetic and wire (32 bits per element), "
            f"weights fetched from DRAM at 2.6 nJ per 64-bit access, P = {e.power:g} W, N0 = {e.noise_psd:g} W/Hz, "
            f"Rayleigh block fading (blocks of {e.block_s:g} s, one inference per {e.interval_s:g} s), no path loss, "
            f"{a.draws} draws per bandwidth, seed 0.")
    sweep_cols = [("threshold", "threshold", "g"), ("compression_ratio", "C_r", ".1f"), ("params", "params", ","),
                  ("accuracy", "test accuracy", ".4f"), ("ps_energy_j", "PS E (J)", ".3e"),
                  ("psnc_energy_j", "PSNC E (J)", ".3e"), ("softmax_energy_j", "softmax E (J)", ".3e"),
                  ("ps_mean_cut", "PS mean cut", ".2f")]
    codec_cols = [("codec", "wire", ""), ("pool-1_energy_j", "pool-1 E (J)", ".3e"),
                  ("softmax_energy_j", "softmax E (J)", ".3e"), ("PS_energy_j", "PS E (J)", ".3e"),
                  ("PSNC_energy_j", "PSNC E (J)", ".3e"), ("ps_mean_cut", "PS mean cut", ".2f")]
    md = (f"# Energy-aware split (Krouka et al.)\n\n{head}\nCreated {C.now_iso()}.\n\n"
          f"## Table III (simulated; the paper's figures in brackets)\n\n{table_iii(table)}\n"
          f"## Compression (Fig. 5), energies at W = {a.sweep_bandwidth:g} Hz\n\n{C.md_table(sweep, sweep_cols)}\n\n"
          f"## Wire encodings at W = {a.sweep_bandwidth:g} Hz (threshold {a.threshold:g})\n\n"
          f"{C.md_table(codecs, codec_cols)}\n\n"
          f"## Per layer (Fig. 3), before and after compression\n\n"
          f"{layer_table(layers['original'], layers['compressed'])}")
    print()
    print(md)
    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}
    C.write_results(NAME, {"benchmark": NAME, "date": C.now_iso(), "machine": machine, "args": args,
                           "trained": trained, "accuracy_original": acc_original, "accuracy_compressed": acc_comp,
                           "table_iii": table, "sweep": sweep, "codecs": codecs, "layers": layers}, md, a.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
