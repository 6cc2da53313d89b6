"""Saved models and the load path: rebuild a split model from a file and predict with it.

A model file (``models/budget_<B>.pt`` in a run directory) holds the split network's
configuration, the budget it was trained for, every client's head (+ compression module)
and one server half (decompressor + tail). It is a plain ``torch.save`` of tensors and
built-in types, so it loads with ``torch.load(weights_only=True)``: nothing in it runs
code.

    from raysplit.inference import load_model
    model = load_model("runs/prune/models/budget_4.pt")       # client 0's head
    labels = model.predict(x)                                  # x: float32 (N, C, H, W)

``predict`` runs the split path exactly as in training: head, top-B selection at the
file's budget, the wire codec, decompression and the tail, in one process. A NAIR model
(``jobs/nair.py``) also holds its slice order: ``predict(x, slices=k)`` sends only the
first k importance-ordered slices and the tail runs on them, zeros elsewhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from raysplit.config.split import SplitConfig
from raysplit.data import ArrayDataset, batches
from raysplit.training.client import SplitClient
from raysplit.training.server import SplitServer
from raysplit.training.state import as_arrays, as_tensors, read_state_file
from raysplit.transport.inprocess import InProcessTransport

FORMAT = "raysplit-model"
VERSION = 1


def save_model(path: str | Path, *, split: SplitConfig, method: str, snapshot, slices=None) -> Path:
    """Write a ``ModelSnapshot`` (``raysplit.records.writer``) as a model file; ``slices``
    (a ``compression.slices.SliceOrder``) is the order a NAIR model sends its channels in."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "method": method,
        "budget": int(snapshot.budget),
        "phase": int(snapshot.phase),
        "epoch": int(snapshot.epoch),
        "split": dataclasses.asdict(split),
        "heads": {int(c): as_tensors(s) for c, s in snapshot.heads.items()},
        "server": as_tensors(snapshot.server),
    }
    if slices is not None:
        payload["slices"] = slices.to_dict()
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


@dataclass
class SplitModel:
    """A loaded split model.

    Attributes:
        split: the network's configuration.
        method, budget, epoch: what it was trained with and when it was saved.
        client_id: whose head this is.
        clients: every client id in the file.
        client, server: the two halves, ready for inference.
        slices: a NAIR model's slice order (``compression.slices.SliceOrder``), else None.
    """

    split: SplitConfig
    method: str
    budget: int
    epoch: int
    client_id: int
    clients: tuple[int, ...]
    client: SplitClient
    server: SplitServer
    slices: object | None = None

    def message(self, x: np.ndarray, slices: int | None = None) -> bytes:
        """The inference message for ``x``: at the file's budget, or (NAIR) the first
        ``slices`` slices of the channel-major message (all of them by default)."""
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != tuple(self.split.input_shape):
            raise ValueError(f"inputs of shape {x.shape[1:]} given; this model takes {tuple(self.split.input_shape)}")
        if self.slices is None:
            if slices is not None:
                raise ValueError("slices= needs a NAIR model (this one sends its budget's channels)")
            return self.client.predict_message(x)
        from raysplit.compression.slices import slice_message

        return slice_message(self.client, x, self.slices, slices)

    def predict(self, x: np.ndarray, batch_size: int = 256, slices: int | None = None) -> np.ndarray:
        """Predicted classes for float32 inputs (N, C, H, W) shaped like the training data."""
        transport = InProcessTransport(self.server)
        out = [transport.predict(self.message(x[i : i + batch_size], slices)) for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)

    def accuracy(self, ds: ArrayDataset, batch_size: int = 256, slices: int | None = None) -> float:
        correct = total = 0
        for x, y in batches(ds, batch_size, shuffle=False, seed=0):
            correct += int((self.predict(x, batch_size, slices) == y).sum())
            total += len(y)
        return correct / total if total else float("nan")


def load_model(path: str | Path, client: int | None = None, device: str = "cpu") -> SplitModel:
    """Rebuild the split model saved at ``path`` with ``client``'s head (default: the
    lowest client id in the file)."""
    path = Path(path)
    data = read_state_file(path, FORMAT, VERSION, "model file")
    split = SplitConfig(**{**data["split"], "input_shape": tuple(data["split"]["input_shape"])})
    # A distilled student's teacher is for training only: the file holds every trained weight.
    split = split.replace(teacher=None)
    heads = data["heads"]
    ids = tuple(sorted(int(c) for c in heads))
    cid = ids[0] if client is None else int(client)
    if cid not in heads:
        raise ValueError(f"{path} holds no head of client {cid}; it has clients {list(ids)}")
    c = SplitClient(split, cid)
    c.load_modules_state(as_arrays(heads[cid]))
    c.set_budget(int(data["budget"]))
    s = SplitServer(split, 0, device)
    s.load_modules_state(as_arrays(data["server"]))
    slices = None
    if data.get("slices") is not None:
        from raysplit.compression.slices import SliceOrder

        slices = SliceOrder.from_dict(data["slices"])
    return SplitModel(split, data["method"], int(data["budget"]), int(data["epoch"]), cid, ids, c, s, slices)
