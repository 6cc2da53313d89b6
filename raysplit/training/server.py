"""The server half of split training, without Ray: decompressor + tail + optimizer.

``train_step`` takes activation messages from one or more clients and runs them as one
forward/backward (the micro-batches are concatenated after decompression). Each
client's loss is the mean over its own samples; the tail's gradient is the mean of the
clients' gradients, so a merged step moves the tail like one step of the average client,
and every client gets exactly the gradient of its own loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from raysplit import codec
from raysplit.config import SplitConfig
from raysplit.training.network import build_network, resolve_device
from raysplit.training.sgd import SGD
from raysplit.training.state import load_numpy_state, numpy_state


@dataclass(frozen=True)
class StepResult:
    """Per message: the client's task loss, correct predictions, samples."""

    client_id: int
    step: int
    loss: float
    correct: int
    samples: int


class SplitServer:
    """Args:
    cfg: the split network's configuration (same on every client and shard).
    shard_id: this replica's number.
    device: "auto" (CUDA if visible, else CPU), "cpu" or "cuda".
    """

    def __init__(self, cfg: SplitConfig, shard_id: int = 0, device: str = "cpu") -> None:
        self.cfg = cfg
        self.shard_id = shard_id
        self.device = resolve_device(device)
        net = build_network(cfg)
        self.decompressor, self.tail = net.decompressor, net.tail
        self.channels = net.channels
        self.wire_shape = net.wire_shape
        self.codec = cfg.codec_config()
        mods = [self.tail] + ([self.decompressor] if self.decompressor is not None else [])
        self.modules = torch.nn.ModuleList(mods).to(self.device)
        self.opt = SGD(
            self.modules.parameters(), lr=0.01, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        self.steps = 0

    def set_lr(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr

    def _check(self, msg: codec.Message, want_labels: bool) -> None:
        if tuple(msg.shape[1:]) != tuple(self.wire_shape):
            raise ValueError(
                f"message from client {msg.client_id} has shape {msg.shape[1:]}, this shard expects {self.wire_shape}"
            )
        if want_labels and msg.labels is None:
            raise ValueError(f"training message from client {msg.client_id} step {msg.step} carries no labels")
        if msg.labels is not None and ((msg.labels < 0).any() or (msg.labels >= self.cfg.num_classes).any()):
            raise ValueError(
                f"labels from client {msg.client_id} outside 0..{self.cfg.num_classes - 1}: "
                f"{np.unique(msg.labels[(msg.labels < 0) | (msg.labels >= self.cfg.num_classes)])[:5]}"
            )

    def _dense_input(self, msg: codec.Message, values: torch.Tensor) -> torch.Tensor:
        if self.decompressor is None:
            return values  # plain split learning: all channels, in order
        return self.decompressor(values, torch.from_numpy(msg.indices).to(values.device))

    def train_step(self, buffers: list[bytes]) -> tuple[list[bytes], list[StepResult]]:
        """One forward/backward over every message; returns their gradient messages."""
        msgs = [codec.decode(b) for b in buffers]
        for m in msgs:
            self._check(m, want_labels=True)
        self.modules.train()
        leaves = [torch.from_numpy(m.values).to(self.device).requires_grad_(True) for m in msgs]
        dense = torch.cat([self._dense_input(m, v) for m, v in zip(msgs, leaves)])
        logits = self.tail(dense)
        labels = torch.from_numpy(np.concatenate([m.labels for m in msgs])).to(self.device)
        per_sample = F.cross_entropy(logits, labels, reduction="none")
        bounds = np.cumsum([0] + [len(m.labels) for m in msgs])
        losses = [per_sample[a:b].mean() for a, b in zip(bounds[:-1], bounds[1:])]
        total = torch.stack(losses).sum()
        if not torch.isfinite(total):
            bad = [(m.client_id, m.step) for m, l in zip(msgs, losses) if not torch.isfinite(l)]
            raise FloatingPointError(f"non-finite loss for (client, step) {bad}")
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        if len(msgs) > 1:
            for p in self.modules.parameters():
                if p.grad is not None:
                    p.grad /= len(msgs)
        self.opt.step()
        self.steps += 1
        pred = logits.detach().argmax(1)
        correct = (pred == labels).cpu().numpy()
        out, results = [], []
        for i, (m, leaf) in enumerate(zip(msgs, leaves)):
            out.append(
                codec.encode(
                    leaf.grad.cpu().numpy(),
                    _wire_indices(m.indices, m.shape[1]),
                    m.shape,
                    self.codec,
                    kind=codec.KIND_GRADIENT,
                    step=m.step,
                    client_id=m.client_id,
                )
            )
            a, b = bounds[i], bounds[i + 1]
            results.append(StepResult(m.client_id, m.step, float(losses[i].detach()), int(correct[a:b].sum()), int(b - a)))
        return out, results

    @torch.no_grad()
    def predict(self, buffers: list[bytes]) -> list[np.ndarray]:
        """Inference: class predictions for each message (eval mode, nothing is learned)."""
        msgs = [codec.decode(b) for b in buffers]
        for m in msgs:
            self._check(m, want_labels=False)
        self.modules.eval()
        outs = []
        for m in msgs:
            logits = self.tail(self._dense_input(m, torch.from_numpy(m.values).to(self.device)))
            outs.append(logits.argmax(1).cpu().numpy().astype(np.int64))
        return outs

    def state(self) -> dict[str, np.ndarray]:
        return numpy_state(self.modules)

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        load_numpy_state(self.modules, state)
        self.modules.to(self.device)


def _wire_indices(indices: np.ndarray, channels: int) -> np.ndarray | None:
    """None (the codec's "all channels in order" flag) when nothing was left out."""
    if len(indices) == channels and np.array_equal(indices, np.arange(channels)):
        return None
    return indices
