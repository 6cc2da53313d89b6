"""The energy-aware split job on a Ray cluster: train, compress, price every cut, then
let every client pick its cut per message while the shards run the rest.

1. the data (MNIST by default, at its native 28 px);
2. the original model (plain loss) and the sparsified one (eq. 10), trained as two Ray
   tasks side by side (or taken from an earlier run's ``models/``);
3. pruning by threshold, and both models' per-layer profiles (the paper's Fig. 3);
4. Table III simulated at each bandwidth: pool-1, softmax, PS and PSNC on one channel;
5. the cluster run: each client actor has its own fading channel and test share, picks
   its cut per message (PS by default) and sends it; a shard holding the whole model
   starts from the cut in the header; every message is a row of ``inferences.parquet``;
6. the run directory::

       config.json  models/{original,sparse,compressed}.pt  profile.{json,md}
       inferences.parquet/  table.md  simulated.json  summary.json  cuts.png  report.html
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import ray

from raysplit.config.energy import EnergySplitConfig
from raysplit.config.split import SplitConfig
from raysplit.data import ArrayDataset, get_dataset, load_dataset
from raysplit.energy.choice import CutPlanner
from raysplit.energy.energy import co2_kg
from raysplit.energy.profile import ModelProfile, profile_model
from raysplit.energy.records import EnergySummary, InferenceRow
from raysplit.energy.simulate import simulate
from raysplit.energy.sparsify import compression_ratio, nonzero, prune
from raysplit.energy.table import layer_table, table_iii
from raysplit.energy.train import accuracy, train_both
from raysplit.identity import Identity, new_run_id
from raysplit.models.whole import whole_model
from raysplit.records.writer import PartTable, write_run_report
from raysplit.runtime.actors.buffer import RecordBufferActor
from raysplit.runtime.actors.energy_client import EnergyClientActor, EnergyClientSpec
from raysplit.runtime.actors.shard import ShardActor
from raysplit.runtime.placement import client_num_cpus, shard_of
from raysplit.training.state import as_arrays, as_tensors, load_numpy_state, read_state_file

MODEL_FORMAT, MODEL_VERSION = "raysplit-energy-model", 1
POLL_SECONDS = 0.5


# -- models ------------------------------------------------------------------------------


def save_model(path: Path, *, model: str, input_shape: tuple[int, ...], num_classes: int,
               state: dict[str, np.ndarray], **meta) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": MODEL_FORMAT, "version": MODEL_VERSION, "model": model, "input_shape": list(input_shape),
                "num_classes": num_classes, "state": as_tensors(state), "meta": meta}, path)


def load_model_file(path: Path, *, model: str, input_shape: tuple[int, ...], num_classes: int) -> dict:
    """A saved model's data; it must be of the network and input this run uses."""
    data = read_state_file(path, MODEL_FORMAT, MODEL_VERSION, "energy-split model")
    have = (data["model"], tuple(data["input_shape"]), data["num_classes"])
    if have != (model, tuple(input_shape), num_classes):
        raise ValueError(f"{path} holds {have[0]} for inputs {have[1]} with {have[2]} classes; this run needs "
                         f"{model} for {tuple(input_shape)} with {num_classes}")
    data["state"] = as_arrays(data["state"])
    return data


def server_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A whole model's state in the layout of a whole-model ``SplitServer`` (its modules
    hold the model as their one group)."""
    return {f"0.{k}": v for k, v in state.items()}


def _train_remote(name: str, train_data: ArrayDataset, test_data: ArrayDataset, threads: int, kw: dict):
    # Arrays from the object store are read-only; torch wants to own writeable ones.
    train_data, test_data = (ArrayDataset(d.name, d.x.copy(), d.y.copy(), d.num_classes)
                             for d in (train_data, test_data))
    return train_both(name, train_data, test_data, threads=threads, **kw)


# -- the run -----------------------------------------------------------------------------


def _data(cfg: EnergySplitConfig) -> tuple[ArrayDataset, ArrayDataset]:
    spec = get_dataset(cfg.dataset)
    size = cfg.image_size or spec.native_size or spec.image_size(None)
    kw = {"seed": cfg.seed, "image_size": size}
    return (load_dataset(cfg.dataset, "train", cfg.data_dir, limit=cfg.train_subset, **kw),
            load_dataset(cfg.dataset, "test", cfg.data_dir, limit=cfg.test_subset, **kw))


def _models(cfg: EnergySplitConfig, train_data: ArrayDataset, test_data: ArrayDataset) -> tuple[dict, dict, float]:
    """(original, sparse) as {"state", "test_accuracy", ...}, and the training seconds."""
    shape, classes = train_data.input_shape, train_data.num_classes
    if cfg.models_from is not None:
        root = Path(cfg.models_from) / "models"
        found = [load_model_file(root / f"{n}.pt", model=cfg.model, input_shape=shape, num_classes=classes)
                 for n in ("original", "sparse")]
        return {**found[0]["meta"], "state": found[0]["state"]}, {**found[1]["meta"], "state": found[1]["state"]}, 0.0
    t = time.perf_counter()
    cpus = max(1, int(min(cfg.train_cpus, ray.cluster_resources().get("CPU", 1.0))))
    task = ray.remote(num_cpus=cpus)(_train_remote)
    kw = dict(epochs=cfg.epochs, sparse_epochs=cfg.sparse_epochs, mu=cfg.mu, batch_size=cfg.batch_size, lr=cfg.lr,
              seed=cfg.seed)
    done = ray.get(task.remote(cfg.model, ray.put(train_data), ray.put(test_data), cpus, kw))
    # (copies: arrays from the object store are read-only, torch wants writeable ones)
    out = [{"state": {k: np.array(v) for k, v in d.state.items()}, "test_accuracy": d.test_accuracy,
            "epoch_loss": d.epoch_loss, "mu": mu, "epochs": len(d.epoch_loss), "train_seconds": d.seconds}
           for d, mu in zip(done, (1.0, cfg.mu))]
    return out[0], out[1], time.perf_counter() - t


def _profile(cfg: EnergySplitConfig, state: dict, shape, classes):
    """The model's profile with these weights, and the model."""
    m = whole_model(cfg.model, shape, classes)
    load_numpy_state(m.layers, state)
    return profile_model(cfg.model, m.layers, shape), m


def check_countable(model: str, shape: tuple[int, ...], classes: int) -> None:
    """Raise a ValueError naming ``--model`` if the energy profile cannot count it."""
    try:
        profile_model(model, whole_model(model, shape, classes).layers, shape)
    except ValueError as err:
        raise ValueError(f"--model {model}: {err}") from None


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def cluster_table(rows: list[InferenceRow], bandwidth: float, policy: str, carbon_index: float) -> list[dict]:
    """Table III at the cluster's bandwidth from its messages: means per inference of what
    was sent (under ``policy``) and of the baselines on the same channel draws."""
    n = sum(r.samples for r in rows)
    if not n:
        return []

    def col(method: str, model: str, ep: str, etr: str) -> dict:
        p = sum(getattr(r, ep) for r in rows) / n
        t = sum(getattr(r, etr) for r in rows) / n
        return {"bandwidth": bandwidth, "method": method, "model": model, "energy_j": p + t, "processing_j": p,
                "transmit_j": t, "co2_kg": float(co2_kg(p + t, carbon_index))}

    chosen = {"ps": "PS", "pool-1": "pool-1 (sent)", "softmax": "softmax (sent)", "input": "input (sent)"}[policy]
    return [col("pool-1", "compressed", "pool1_processing_j", "pool1_transmit_j"),
            col("softmax", "compressed", "softmax_processing_j", "softmax_transmit_j"),
            col(chosen, "compressed", "processing_j", "transmit_j"),
            col("PSNC", "original", "psnc_processing_j", "psnc_transmit_j"),
            {**col("input", "none", "input_transmit_j", "input_transmit_j"), "processing_j": 0.0,
             "energy_j": sum(r.input_transmit_j for r in rows) / n,
             "co2_kg": float(co2_kg(sum(r.input_transmit_j for r in rows) / n, carbon_index))}]


def _plot(rows: list[InferenceRow], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = np.array([max(r.gain, 1e-12) for r in rows])
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].scatter(g, [r.cut for r in rows], s=6, label="sent (compressed)")
    ax[0].scatter(g, [r.psnc_cut for r in rows], s=6, marker="x", alpha=0.5, label="PSNC (original)")
    ax[0].set(xscale="log", xlabel="|h|² at the message's start", ylabel="cut", yticks=range(len(names)))
    ax[0].set_yticklabels(names, fontsize=7)
    ax[0].legend(fontsize=7)
    ax[1].scatter(g, [1e6 * r.energy_j / r.samples for r in rows], s=6, label="sent")
    ax[1].scatter(g, [1e6 * (r.psnc_processing_j + r.psnc_transmit_j) / r.samples for r in rows], s=6, marker="x",
                  alpha=0.5, label="PSNC")
    ax[1].set(xscale="log", yscale="log", xlabel="|h|²", ylabel="E per inference (µJ)")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_energy_split(cfg: EnergySplitConfig) -> EnergySummary:
    """The whole job (Ray must be initialised); returns the summary, writes ``cfg.out``."""
    t_start = time.perf_counter()
    e = cfg.energy
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "inferences.parquet", ignore_errors=True)
    for stale in ("summary.json", "table.md", "simulated.json", "cuts.png", "profile.json", "profile.md",
                  "report.html"):
        (out / stale).unlink(missing_ok=True)
    identity = Identity(cfg.run_id or new_run_id("energy_split"), cfg.tenant)
    _write_json(out / "config.json", {**cfg.to_dict(), "run_id": identity.run})

    train_data, test_data = _data(cfg)
    shape, classes = train_data.input_shape, train_data.num_classes
    check_countable(cfg.model, shape, classes)  # now, not after the training
    original, sparse, train_seconds = _models(cfg, train_data, test_data)
    compressed_state = prune(sparse["state"], cfg.prune_threshold)
    meta = dict(model=cfg.model, input_shape=shape, num_classes=classes)
    save_model(out / "models/original.pt", state=original["state"], **meta, **_meta(original))
    save_model(out / "models/sparse.pt", state=sparse["state"], **meta, **_meta(sparse))
    dense_profile, dense_model = _profile(cfg, original["state"], shape, classes)
    comp_profile, comp_model = _profile(cfg, compressed_state, shape, classes)
    orig_acc, comp_acc = accuracy(dense_model, test_data), accuracy(comp_model, test_data)  # on this run's test set
    ratio = compression_ratio(original["state"], compressed_state)
    save_model(out / "models/compressed.pt", state=compressed_state, **meta, **_meta(sparse),
               prune_threshold=cfg.prune_threshold, test_accuracy_pruned=comp_acc, compression_ratio=ratio)

    costs = e.hardware()
    layers = {"original": dense_profile.layer_table(costs), "compressed": comp_profile.layer_table(costs)}
    _write_json(out / "profile.json", layers)
    (out / "profile.md").write_text(layer_table(layers["original"], layers["compressed"]))

    planners = {n: CutPlanner(p, costs, cfg.codec, e.bits, e.power, e.block_s)
                for n, p in (("compressed", comp_profile), ("original", dense_profile))}
    simulated = []
    for w in e.bandwidths:
        for r in simulate(planners, e.radio(w), e.draws_config(samples=cfg.infer_batch), e.carbon_index,
                          allowed=e.ps_cuts(comp_profile.depth)):
            simulated.append({"bandwidth": w, **dataclasses.asdict(r)})
    _write_json(out / "simulated.json", simulated)

    # -- the cluster run
    rows, failed, infer_seconds = _cluster(cfg, identity, comp_profile, dense_profile, compressed_state, test_data,
                                           out)
    table = cluster_table(rows, e.bandwidth, cfg.policy, e.carbon_index)
    n = sum(r.samples for r in rows)
    md = [f"# Energy-aware split: {cfg.model} on {cfg.dataset}, run {identity.run}\n",
          f"original model: test accuracy {orig_acc:.4f}; compressed (L1 {cfg.l1:g}, threshold "
          f"{cfg.prune_threshold:g}): {comp_acc:.4f}, C_r = {ratio:.1f} ({nonzero(original['state']):,} -> "
          f"{nonzero(compressed_state):,} parameters)\n",
          "## Simulated (Table III layout; the paper's figures in brackets)\n",
          f"{e.draws} channel draws, {e.fading} fading, blocks of {e.block_s:g} s, P = {e.power:g} W, "
          f"N0 = {e.noise_psd:g} W/Hz, {cfg.codec} {e.bits} bits, {cfg.infer_batch} sample(s) per message\n",
          table_iii(simulated),
          f"## Cluster run: {cfg.clients} clients, W = {e.bandwidth:g} Hz, policy {cfg.policy}\n",
          f"{n} inferences in {len(rows)} messages; accuracy {sum(r.correct for r in rows) / max(n, 1):.4f}\n",
          table_iii(table, paper=False)]
    (out / "table.md").write_text("\n".join(md))
    if rows:
        _plot(rows, comp_profile.names(), out / "cuts.png")
    cuts: dict[int, int] = {}
    for r in rows:
        cuts[r.cut] = cuts.get(r.cut, 0) + 1
    energy = sum(r.energy_j for r in rows) / max(n, 1)
    summary = EnergySummary(
        run=identity.run, tenant=identity.tenant, model=cfg.model, dataset=cfg.dataset, policy=cfg.policy,
        codec=cfg.codec, clients=cfg.clients, shards=cfg.shards, bandwidth=e.bandwidth,
        original_accuracy=float(orig_acc), compressed_accuracy=float(comp_acc),
        cluster_accuracy=sum(r.correct for r in rows) / n if n else math.nan, compression_ratio=float(ratio),
        params_original=nonzero(original["state"]), params_compressed=nonzero(compressed_state), samples=n,
        messages=len(rows), bytes_up=sum(r.bytes_up for r in rows), energy_j=energy,
        processing_j=sum(r.processing_j for r in rows) / max(n, 1),
        transmit_j=sum(r.transmit_j for r in rows) / max(n, 1), co2_kg=float(co2_kg(energy, e.carbon_index)),
        cuts={comp_profile.names()[c]: k for c, k in sorted(cuts.items())}, table=table, simulated=simulated,
        failed_clients={str(c): m for c, m in sorted(failed.items())},
        wall_seconds=time.perf_counter() - t_start, train_seconds=train_seconds, infer_seconds=infer_seconds,
    )
    _write_json(out / "summary.json", dataclasses.asdict(summary))
    write_run_report(out)  # report.html (raysplit.energy.report); a failure is said, the run kept
    return summary


def _meta(model: dict) -> dict:
    return {k: v for k, v in model.items() if k != "state"}


def _cluster(cfg: EnergySplitConfig, identity: Identity, comp: ModelProfile, dense: ModelProfile,
             state: dict, test: ArrayDataset, out: Path) -> tuple[list[InferenceRow], dict[int, str], float]:
    """Start the shards and clients, run every client's share, write rows as they come."""
    e = cfg.energy
    resources = ray.cluster_resources()
    use_gpu = resources.get("GPU", 0) >= cfg.shards
    split = SplitConfig(model=cfg.model, input_shape=test.input_shape, num_classes=test.num_classes,
                        use_module=False, codec=cfg.codec, seed=cfg.seed,
                        torch_threads=max(1, int(round(cfg.shard_cpus))))
    cuts = tuple(range(comp.depth + 1))
    buffer = RecordBufferActor.options(num_cpus=0).remote()
    shards = [ShardActor.options(num_cpus=cfg.shard_cpus, num_gpus=1 if use_gpu else 0, max_concurrency=1000)
              .remote(split, None, k, identity, 32, "cuda" if use_gpu else "cpu", cuts) for k in range(cfg.shards)]
    clients, actors = {}, []
    table = PartTable(out / "inferences.parquet", InferenceRow)
    rows: list[InferenceRow] = []
    failed: dict[int, str] = {}
    try:
        ray.get([s.load_modules_state.remote(server_state(state)) for s in shards])
        state_ref = ray.put(state)
        share = np.array_split(np.arange(len(test)), cfg.clients)
        cpus = client_num_cpus(None, cfg.clients, resources.get("CPU", 1.0), cfg.shard_cpus, cfg.shards)
        for c in range(cfg.clients):
            s = shard_of(c, cfg.shards)
            spec = EnergyClientSpec(
                client=c, model=cfg.model, input_shape=test.input_shape, num_classes=test.num_classes,
                state=state_ref, compressed=comp, original=dense, costs=e.hardware(), codec=cfg.codec, bits=e.bits,
                radio=e.radio(), fading=e.fading, block_s=e.block_s, seed=e.channel_seed + 1 + c,
                rician_k=e.rician_k, policy=cfg.policy, interval_blocks=e.interval_blocks,
                carbon_index=e.carbon_index, allowed=tuple(e.ps_cuts(comp.depth)), batch=cfg.infer_batch,
                test_x=ray.put(test.x[share[c]]),
                test_y=ray.put(test.y[share[c]]), shard=shards[s], shard_id=s)
            actor = EnergyClientActor.options(num_cpus=cpus).remote(spec, identity, buffer)
            actors.append(actor)
            clients[actor.run.remote()] = c
        from tqdm import tqdm

        bar = tqdm(total=len(test), desc=f"energy split x{cfg.clients}", unit="inference", disable=not cfg.progress)
        t = time.perf_counter()
        pending = dict(clients)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            for ref in done:
                c = pending.pop(ref)
                try:
                    ray.get(ref)
                except Exception as err:  # noqa: BLE001 - one client's failure must not stop the others
                    cause = getattr(err, "cause", None) or err
                    failed[c] = f"{type(cause).__name__}: {cause}".strip().splitlines()[0][:500]
                    print(f"[raysplit] client {c} failed and is dropped: {failed[c]}", flush=True)
            new = ray.get(buffer.drain.remote())
            if new:
                rows.extend(new)
                table.append(new)
                table.flush()
                bar.update(sum(r.samples for r in new))
        bar.close()
        infer_seconds = time.perf_counter() - t
    finally:
        for a in [*actors, *shards, buffer]:
            ray.kill(a)
    rows.sort(key=lambda r: (r.client, r.batch))
    return rows, failed, infer_seconds


def format_summary(s: EnergySummary, out: Path | None = None) -> str:
    """The short report printed at the end (and the tables of ``table.md``)."""
    rows = [
        ("model / data", f"{s.model} / {s.dataset}"),
        ("test accuracy", f"original {100 * s.original_accuracy:.2f} %, "
                          f"compressed {100 * s.compressed_accuracy:.2f} %, "
                          f"cluster {100 * s.cluster_accuracy:.2f} %"),
        ("compression ratio",
         f"{s.compression_ratio:.1f} ({s.params_original:,} -> {s.params_compressed:,} parameters)"),
        ("clients / shards", f"{s.clients} / {s.shards}, policy {s.policy}, codec {s.codec}, W = {s.bandwidth:g} Hz"),
        ("inferences", f"{s.samples} in {s.messages} messages, {s.bytes_up:,} bytes up"),
        ("per inference", f"E {s.energy_j:.3e} J (E_p {s.processing_j:.3e}, E_tr {s.transmit_j:.3e}), "
                          f"CO2 {s.co2_kg:.3e} kg"),
        ("cuts sent", ", ".join(f"{k}: {v}" for k, v in s.cuts.items()) or "-"),
        ("wall time", f"{s.wall_seconds:.1f} s (training {s.train_seconds:.1f} s, inference {s.infer_seconds:.1f} s)"),
    ]
    if s.failed_clients:
        rows.append(("failed clients", ", ".join(f"{c}: {m}" for c, m in s.failed_clients.items())))
    w = max(len(k) for k, _ in rows)
    text = "\n".join(f"{k:<{w}}  {v}" for k, v in rows)
    if out is not None and (out / "table.md").exists():
        text = (out / "table.md").read_text() + "\n" + text
    return text
