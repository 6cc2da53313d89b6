"""NAIR end to end (Xiao et al.): the original split model, its fine-tuned variants, and
their accuracy against a transmission deadline on an emulated link, in the layout of the
paper's Table II.

    python jobs/nair.py --variants original,clio,nair,module       # the job wires this up

Steps (each writes into the run directory):

1. the original model: loaded (``--original``, a ``--method none`` model file) or trained
   here (ordinary training, SGD with cosine annealing); ``models/original.pt``;
2. each fine-tuned variant (``training.slice_tuning.VARIANTS``: NAIR, its ablations, the
   CLIO-style baseline) starts from a copy of it; ``models/<variant>.pt`` holds its slice
   order, so ``raysplit.inference.load_model`` and the server send slices in that order;
3. "module": Prune-Deprune's compression module, one model per budget (``--module-run``,
   or trained here with ``--method prune`` at the budgets that fit the deadlines);
4. every test image is one request over the link (``raysplit.link``), ``request_interval``
   apart on the link's clock. A slice model's client sends the whole channel-major message
   and the server runs the tail on the slices that arrived by the deadline, zeros
   elsewhere; the module's client sends the largest budget whose message arrives in time
   (it knows its link: an upper bound for the module). A request none of whose data
   arrives in time gets no answer and counts as wrong. What the server computes is the
   real path: codec messages, cut where the link cuts them, decoded, the tail.

Outputs: ``deadlines.json`` and ``table.md`` (accuracy per method and deadline, and with no
deadline), ``finetune.json`` (per-epoch losses), ``accuracy_latency.png``, ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from raysplit import codec
from raysplit.compression.slices import SliceOrder, encode_slices, natural_order, truncate_slices
from raysplit.config.nair import NairConfig
from raysplit.config.split import SplitConfig
from raysplit.config.train import TrainConfig
from raysplit.data import ArrayDataset, batches
from raysplit.inference import SplitModel, load_model, save_model
from raysplit.records.writer import ModelSnapshot
from raysplit.training.client import SplitClient
from raysplit.training.network import resolve_device
from raysplit.training.server import SplitServer
from raysplit.training.setup import prepare
from raysplit.training.slice_tuning import VARIANTS, SliceObjective, make_objective, train_slices

__all__ = ["run", "Outcome", "slice_outcomes", "module_outcomes", "deadline_table", "auto_deadlines"]

AUTO_SLICES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)  # Table II: 1, 2, 3, 4, 6 and 8 slices' worth of time


# ----------------------------------------------------------------------------- models


def _halves(split: SplitConfig, device: str) -> tuple[SplitClient, SplitServer]:
    return SplitClient(split, 0), SplitServer(split, 0, device)


def _model(split: SplitConfig, method: str, client: SplitClient, server: SplitServer, order: SliceOrder | None,
           epoch: int = 0) -> SplitModel:
    return SplitModel(split, method, client.channels, epoch, 0, (0,), client, server, order)


def _save(path: Path, m: SplitModel) -> Path:
    snap = ModelSnapshot(0, m.budget, m.epoch, {0: m.client.modules_state()}, m.server.modules_state())
    return save_model(path, split=m.split, method=m.method, snapshot=snap, slices=m.slices)


def _clone(m: SplitModel, method: str, device: str) -> SplitModel:
    client, server = _halves(m.split, device)
    client.load_modules_state(m.client.modules_state())
    server.load_modules_state(m.server.modules_state())
    return _model(m.split, method, client, server, m.slices, m.epoch)


# ----------------------------------------------------------------------------- outcomes


@dataclass
class Outcome:
    """What one method gives each request (test image).

    Attributes:
        name: the method.
        kind: "slices" (a channel-major message the link may cut) or "budgets" (one
            sample-major message per budget, the largest that fits is sent).
        correct: bool (N, K+1): column k = right with k slices (column 0, nothing: False), or
            with the k-th budget of ``budgets`` (column 0: no budget fits).
        ends: slices: int (N, J+1), ``codec.slice_ends`` of each request's message.
        sizes: budgets: int (N, len(budgets)), each budget's message bytes.
        budgets: budgets: the budgets, ascending.
    """

    name: str
    kind: str
    correct: np.ndarray
    ends: np.ndarray | None = None
    sizes: np.ndarray | None = None
    budgets: tuple[int, ...] = ()


@torch.no_grad()
def slice_outcomes(name: str, m: SplitModel, test: ArrayDataset, batch_size: int = 256) -> Outcome:
    """A slice model's answers with k = 0..J slices, through the codec and the server."""
    order, client = m.slices, m.client
    j = order.n_slices
    correct = np.zeros((len(test), j + 1), dtype=bool)
    ends = np.zeros((len(test), j + 1), dtype=np.int64)
    ids = dict(cut=m.split.split_layer, tenant=client.tenant_key, client_id=client.client_id)
    client.modules.eval()
    at = 0
    for x, y in batches(test, batch_size, shuffle=False, seed=0):
        act = client.head(torch.from_numpy(x)).numpy()
        buf = encode_slices(act, order, client.codec, **ids)  # its prefixes are the k-slice messages
        for k in range(1, j + 1):
            (pred,) = m.server.predict([truncate_slices(buf, k)])
            correct[at : at + len(y), k] = pred == y
        for i in range(len(y)):  # each request's own (one-image) message: where its slices end
            if i and client.codec.compression == "none":
                ends[at + i] = ends[at]  # the same sizes for every image
            else:
                ends[at + i] = codec.slice_ends(encode_slices(act[i : i + 1], order, client.codec, **ids))
        at += len(y)
    return Outcome(name, "slices", correct, ends=ends)


def module_outcomes(name: str, models: dict[int, SplitModel], test: ArrayDataset, batch_size: int = 256) -> Outcome:
    """The compression module's answers at each trained budget (ascending)."""
    budgets = tuple(sorted(models))
    correct = np.zeros((len(test), len(budgets) + 1), dtype=bool)
    sizes = np.zeros((len(test), len(budgets)), dtype=np.int64)
    for col, b in enumerate(budgets, start=1):
        m = models[b]
        at = 0
        for x, y in batches(test, batch_size, shuffle=False, seed=0):
            correct[at : at + len(y), col] = m.predict(x, batch_size) == y
            for i in range(len(y)):
                if i and m.client.codec.compression == "none":
                    sizes[at + i, col - 1] = sizes[at, col - 1]
                else:
                    sizes[at + i, col - 1] = len(m.client.predict_message(x[i : i + 1]))
            at += len(y)
    return Outcome(name, "budgets", correct, sizes=sizes, budgets=budgets)


def deadline_table(outcomes: list[Outcome], link_text: str, deadlines: tuple[float, ...], *, interval: float,
                   seed: int) -> list[dict]:
    """One row per method and deadline (math.inf: no deadline): accuracy (wrong when nothing
    arrived), share answered, mean slices (or budget) used, mean bytes that arrived in time."""
    from raysplit.link.medium import ClientLink
    from raysplit.link.spec import parse_link
    from raysplit.serving.deadline import in_time, prefix_arrivals, units_by_deadline

    spec = parse_link(link_text)
    rows = []
    for oc in outcomes:
        link = ClientLink(0, spec, seed)  # every method sees the same link, request for request
        n = len(oc.correct)
        got = np.zeros((n, len(deadlines)), dtype=np.int64)  # slices / budget index per request and deadline
        used = np.zeros((n, len(deadlines)), dtype=np.int64)
        for i in range(n):
            start = i * interval
            if oc.kind == "slices":
                arr = prefix_arrivals(link, start, oc.ends[i])
                for c, d in enumerate(deadlines):
                    k = oc.ends.shape[1] - 1 if math.isinf(d) else max(units_by_deadline(arr, d), 0)
                    got[i, c], used[i, c] = k, oc.ends[i, k] if k else 0
            else:
                arr = np.array([prefix_arrivals(link, start, [s])[-1] for s in oc.sizes[i]])
                for c, d in enumerate(deadlines):
                    fit = np.flatnonzero(in_time(arr, d)) if not math.isinf(d) else np.arange(len(arr))
                    k = int(fit.max()) + 1 if len(fit) else 0
                    got[i, c], used[i, c] = k, oc.sizes[i, k - 1] if k else 0
        for c, d in enumerate(deadlines):
            k = got[:, c]
            answered = k > 0
            mean_k = float(k[answered].mean()) if answered.any() else 0.0
            rows.append({
                "method": oc.name,
                "deadline_s": d,
                "accuracy": float(oc.correct[np.arange(n), k].mean()),
                "answered": float(answered.mean()),
                "mean_slices": mean_k if oc.kind == "slices" else None,
                "mean_budget": (float(np.mean([oc.budgets[v - 1] for v in k[answered]])) if answered.any() else 0.0)
                if oc.kind == "budgets" else None,
                "mean_bytes": float(used[:, c].mean()),
            })
    return rows


def auto_deadlines(outcome: Outcome, link_text: str, seed: int) -> tuple[float, ...]:
    """When 1, 2, 3, 4, 6, 8, ... slices of the first request's message arrive on a fresh link
    (Table II's columns are multiples of one slice's time)."""
    from raysplit.link.medium import ClientLink
    from raysplit.link.spec import parse_link
    from raysplit.serving.deadline import prefix_arrivals

    arr = prefix_arrivals(ClientLink(0, parse_link(link_text), seed), 0.0, outcome.ends[0])
    j = outcome.ends.shape[1] - 1
    picks = sorted({k for k in AUTO_SLICES if k < j} | {j})
    return tuple(float(arr[k]) for k in picks)


# ----------------------------------------------------------------------------- the run


def _table_md(rows: list[dict], deadlines: tuple[float, ...], names: list[str], link: str, data: str) -> str:
    def head(d):
        return "no deadline" if math.isinf(d) else (f"{d * 1e3:.0f} ms" if d < 1 else f"{d:.2f} s")

    by = {(r["method"], r["deadline_s"]): r for r in rows}
    out = [f"Accuracy (%) by transmission deadline on {link}; {data}. A request whose data did not "
           "arrive in time counts as wrong; in brackets: mean slices (or the module's mean budget B) used.", "",
           "| method | " + " | ".join(head(d) for d in deadlines) + " |",
           "|---|" + "---:|" * len(deadlines)]
    for name in names:
        cells = []
        for d in deadlines:
            r = by[name, d]
            extra = r["mean_slices"] if r["mean_slices"] is not None else r["mean_budget"]
            cells.append(f"{100 * r['accuracy']:.2f} ({extra:.1f})" if r["answered"] else "—")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _plot(path: Path, rows: list[dict], names: list[str]) -> None:
    from raysplit.records.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name in names:
        pts = sorted((r["deadline_s"], 100 * r["accuracy"]) for r in rows if r["method"] == name
                     and math.isfinite(r["deadline_s"]))
        ax.plot([p[0] * 1e3 for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xlabel("transmission deadline (ms)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _train_module(cfg: NairConfig, split: SplitConfig, budgets: tuple[int, ...], out: Path) -> dict[int, SplitModel]:
    """Prune-Deprune's compression module trained with ``--method prune`` (raysplit.local):
    the full budget for original_epochs, then each smaller budget for ``epochs``."""
    from raysplit import local

    tc = TrainConfig(method="prune", split=split.replace(use_module=True), dataset=cfg.dataset, data_dir=cfg.data_dir,
                     image_size=cfg.image_size, budgets=budgets, lr=cfg.lr,
                     epochs_per_budget=(cfg.original_epochs,) + (cfg.epochs,) * (len(budgets) - 1),
                     batch_size=cfg.batch_size, train_subset=cfg.train_subset, test_subset=cfg.test_subset,
                     out=str(out), progress=cfg.progress)
    local.run(tc)
    return _load_module(out)


def _load_module(run_dir: Path) -> dict[int, SplitModel]:
    files = sorted(Path(run_dir, "models").glob("budget_*.pt"))
    if not files:
        raise FileNotFoundError(f"no models/budget_<B>.pt in {run_dir}: give a --method prune run directory")
    models = {}
    for f in files:
        m = load_model(f)
        if m.client.compressor is None:
            raise ValueError(f"{f} has no compression module (method {m.method}); give a --method prune run")
        models[m.budget] = m
    return models


def _module_budgets(channels: int, shape: tuple[int, ...], cc, link: str, deadlines, seed: int) -> tuple[int, ...]:
    """The largest budget whose one-image message arrives by each deadline, plus all channels
    (sizes without lz4/zstd: a compressed message is smaller, so it fits too)."""
    from raysplit.link.medium import ClientLink
    from raysplit.link.spec import parse_link
    from raysplit.serving.deadline import in_time, prefix_arrivals

    out = {channels}
    spec = parse_link(link)
    plain = dataclasses.replace(cc, compression="none", level=None)
    for d in deadlines:
        if math.isinf(d):
            continue
        fits = [b for b in range(1, channels + 1)
                if in_time(prefix_arrivals(ClientLink(0, spec, seed), 0.0,
                                   [codec.encoded_size((1, *shape), b, plain, with_labels=False,
                                                       all_channels=b == channels)])[-1], d)]
        if fits:
            out.add(max(fits))
    return tuple(sorted(out, reverse=True))


def run(cfg: NairConfig, split: SplitConfig, *, log=print) -> dict:
    """The whole NAIR run; returns the summary (also written to summary.json)."""
    t_start = time.perf_counter()
    out = Path(cfg.out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    prep = prepare(TrainConfig(method="none", split=split.replace(use_module=False), dataset=cfg.dataset,
                               data_dir=cfg.data_dir, image_size=cfg.image_size, train_subset=cfg.train_subset,
                               test_subset=cfg.test_subset, batch_size=cfg.batch_size, out=cfg.out, progress=False))
    split, train, test = prep.cfg.split, prep.train, prep.test
    device = str(resolve_device(cfg.device))
    (out / "config.json").write_text(json.dumps({"nair": cfg.to_dict(), "split": dataclasses.asdict(split)},
                                                indent=2, default=str))
    say = (lambda *a: log(*a)) if cfg.progress else (lambda *a: None)
    fold = cfg.importance == "folded"
    logs: dict[str, list[dict]] = {}

    # 1. the original model
    if cfg.original:
        original = load_model(cfg.original)
        if original.client.compressor is not None:
            raise ValueError(f"{cfg.original}: NAIR starts from a model without the compression module "
                             f"(method none); this one was trained with method {original.method}")
        split = original.split
        original = _clone(original, "original", device)
    else:
        client, server = _halves(split, device)
        say(f"[nair] training the original model: {cfg.original_epochs} epochs on {len(train)} images")
        ep = train_slices(client.head, server.tail, client.channels, train, SliceObjective.plain(client.channels),
                          epochs=cfg.original_epochs, lr=cfg.lr, batch_size=cfg.batch_size, momentum=split.momentum,
                          weight_decay=split.weight_decay, seed=split.seed, device=device,
                          on_epoch=lambda e: say(f"[nair] original epoch {e.epoch + 1}: loss {e.loss:.4f}"))
        logs["original"] = [dataclasses.asdict(e) for e in ep]
        client.head.cpu()
        server.modules.to(server.device)
        original = _model(split, "none", client, server, None, cfg.original_epochs)
    channels = original.client.channels
    if not 1 <= cfg.slices <= channels:
        raise ValueError(f"slices {cfg.slices} out of range: the split activation has {channels} channels")
    original.slices = natural_order(channels, cfg.slices)
    _save(out / "models" / "original.pt", original)
    models = {"original": original}

    # 2. the fine-tuned variants
    for name in [v for v in cfg.variants if v in VARIANTS and VARIANTS[v].weights is not None]:
        m = _clone(original, name, device)
        obj = make_objective(name, m.client.head, channels, cfg.slices, w_non=cfg.w_non, lam=cfg.penalty,
                             fold_bn=fold)
        say(f"[nair] fine-tuning {name}: {cfg.epochs} epochs, {cfg.slices} slices, weights "
            + ", ".join(f"{w:.3f}" for w in obj.weights) + (f", penalty {obj.lam:g}" if obj.lam else ""))
        ep = train_slices(m.client.head, m.server.tail, channels, train, obj, epochs=cfg.epochs, lr=cfg.lr,
                          batch_size=cfg.batch_size, momentum=split.momentum, weight_decay=split.weight_decay,
                          seed=split.seed + 1, device=device,
                          on_epoch=lambda e, name=name: say(f"[nair] {name} epoch {e.epoch + 1}: loss {e.loss:.4f}"
                                                            f" ({e.seconds:.0f} s)"))
        logs[name] = [dataclasses.asdict(e) for e in ep]
        m.client.head.cpu()
        m.server.modules.to(m.server.device)
        m.slices = obj.order if obj.order.n_slices == cfg.slices else natural_order(channels, cfg.slices)
        m.epoch = cfg.epochs
        _save(out / "models" / f"{name}.pt", m)
        models[name] = m
    (out / "finetune.json").write_text(json.dumps(logs, indent=2))

    # 3. answers per request, and the deadlines
    names = [v for v in cfg.variants if v in models]
    outcomes = [slice_outcomes(n, models[n], test) for n in names]
    ref = outcomes[0] if outcomes else slice_outcomes("original", original, test)
    deadlines = cfg.deadlines or auto_deadlines(ref, cfg.link, cfg.link_seed)
    if "module" in cfg.variants:
        if cfg.module_run:
            module = _load_module(Path(cfg.module_run))
        else:
            budgets = _module_budgets(channels, original.client.wire_shape, original.client.codec, cfg.link,
                                      deadlines, cfg.link_seed)
            say(f"[nair] training the compression module (method prune) at budgets {list(budgets)}")
            module = _train_module(cfg, split, budgets, out / "module")
        outcomes.append(module_outcomes("module", module, test))
        names.append("module")
    deadlines = tuple(deadlines) + (math.inf,)
    rows = deadline_table(outcomes, cfg.link, deadlines, interval=cfg.request_interval, seed=cfg.link_seed)
    data = (f"{cfg.dataset}, {len(test)} test images, {split.model} split after layer {split.split_layer} "
            f"({channels} channels), {cfg.slices} slices, codec {split.codec}")
    table = _table_md(rows, deadlines, names, cfg.link, data)
    (out / "table.md").write_text(table)
    (out / "deadlines.json").write_text(json.dumps(rows, indent=2, default=str))
    _plot(out / "accuracy_latency.png", rows, names)
    by = {(r["method"], r["deadline_s"]): r["accuracy"] for r in rows}
    summary = {
        "dataset": cfg.dataset, "model": split.model, "split_layer": split.split_layer, "channels": channels,
        "slices": cfg.slices, "link": cfg.link, "codec": split.codec, "train_samples": len(train),
        "test_samples": len(test), "deadlines_s": [d for d in deadlines if math.isfinite(d)],
        "no_deadline_accuracy": {n: by[n, math.inf] for n in names},
        "accuracy": {n: [by[n, d] for d in deadlines if math.isfinite(d)] for n in names},
        "models": sorted(str(p.relative_to(out)) for p in (out / "models").glob("*.pt")),
        "wall_seconds": time.perf_counter() - t_start,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    say(table)
    return summary
