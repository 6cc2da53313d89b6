"""The client half of split training, without Ray: head + compressor + optimizer.

One training step is two calls: ``forward`` (returns the activation message) and
``backward`` (takes the gradient message). The graph between them is kept, keyed by
the step number carried in both messages, so a gradient can never be applied to the
wrong activation.
"""

from __future__ import annotations

import numpy as np
import torch

from raysplit import codec
from raysplit.compression.losses import prune_loss
from raysplit.config import SplitConfig
from raysplit.training.network import build_network
from raysplit.training.sgd import SGD
from raysplit.training.state import load_numpy_state, numpy_state


class SplitClient:
    """Args:
    cfg: the split network's configuration (same on every client and shard).
    client_id: carried in every message; the server echoes it.
    """

    def __init__(self, cfg: SplitConfig, client_id: int = 0) -> None:
        self.cfg = cfg
        self.client_id = int(client_id)
        net = build_network(cfg)
        self.head, self.compressor = net.head, net.compressor
        self.channels = net.channels
        self.wire_shape = net.wire_shape
        self.codec = cfg.codec_config()
        modules = [self.head] + ([self.compressor] if self.compressor is not None else [])
        self.modules = torch.nn.ModuleList(modules)
        decay = [p for n, p in self.modules.named_parameters() if not n.endswith("f_hat")]
        no_decay = [p for n, p in self.modules.named_parameters() if n.endswith("f_hat")]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        # An empty head (split_layer 0, no module) has nothing to train.
        self.opt = (
            SGD(groups, lr=0.01, momentum=cfg.momentum) if any(g["params"] for g in groups) else None
        )
        self.budget = self.channels
        self.step = 0
        self._pending: tuple[int, torch.Tensor, torch.Tensor | None] | None = None

    # -- schedule -------------------------------------------------------------
    def set_budget(self, budget: int) -> None:
        if not 1 <= budget <= self.channels:
            raise ValueError(f"budget {budget} out of range: allowed 1..{self.channels}")
        if self.compressor is None and budget != self.channels:
            raise ValueError(f"without the compression module every channel is sent; budget must be {self.channels}")
        self.budget = int(budget)

    def set_lr(self, lr: float) -> None:
        if self.opt is not None:
            for g in self.opt.param_groups:
                g["lr"] = lr

    def reset_filter(self, which: str, old_budget: int, seed: int) -> int:
        if self.compressor is None:
            return 0
        g = torch.Generator().manual_seed(seed)
        return self.compressor.reset_filter(which, old_budget, generator=g)

    # -- one step -------------------------------------------------------------
    def _encode_out(self, x: np.ndarray, *, kind_labels: np.ndarray | None, step: int) -> tuple[bytes, torch.Tensor]:
        l_n = self.head(torch.from_numpy(np.require(x, np.float32, ["C", "W"])))
        if self.compressor is None:
            sel, idx = l_n, None
        else:
            sel, idx_t = self.compressor(l_n, self.budget)
            idx = None if idx_t is None else idx_t.numpy()
        buf = codec.encode(
            sel.detach().numpy(),
            idx,
            (sel.shape[0], self.channels, *sel.shape[2:]),
            self.codec,
            kind=codec.KIND_ACTIVATION,
            labels=kind_labels,
            step=step,
            client_id=self.client_id,
        )
        return buf, sel

    def forward(self, x: np.ndarray, y: np.ndarray) -> bytes:
        """Head + compression; returns the activation message (labels travel with it)."""
        if self._pending is not None:
            raise RuntimeError(f"client {self.client_id}: step {self._pending[0]} still awaits its gradient")
        self.modules.train()
        self.step += 1
        buf, sel = self._encode_out(x, kind_labels=np.asarray(y, dtype=np.int64), step=self.step)
        self._pending = (self.step, sel)
        return buf

    def backward(self, grad_buf: bytes) -> dict[str, float]:
        """Apply the server's gradient for the sent channels, plus ε·pruneLoss on f."""
        if self._pending is None:
            raise RuntimeError(f"client {self.client_id}: gradient received with no step pending")
        msg = codec.decode(grad_buf)
        step, sel = self._pending
        if msg.kind != codec.KIND_GRADIENT or msg.step != step or msg.client_id != self.client_id:
            raise ValueError(
                f"client {self.client_id}: expected the gradient of step {step}, got kind {msg.kind} "
                f"for step {msg.step} of client {msg.client_id}"
            )
        if msg.values.shape != tuple(sel.shape):
            raise ValueError(f"gradient shape {msg.values.shape} does not match the activation {tuple(sel.shape)}")
        self._pending = None
        p_loss = 0.0
        if self.opt is None:
            return {"prune_loss": 0.0}
        self.opt.zero_grad(set_to_none=True)
        if sel.requires_grad:
            # d(sum(sel * g))/d sel = g exactly, so this is sel.backward(g). The scalar
            # form matters for memory: autograd imports sympy (~20 MiB per process) to
            # check the shape of an explicit gradient tensor.
            (sel * torch.from_numpy(msg.values)).sum().backward()
        if self.compressor is not None:
            # totalLoss = Loss + ε·pruneLoss. pruneLoss depends only on f, which lives
            # here, so its gradient is added on the client: same sum, f never travels.
            pl = prune_loss(self.compressor.filter(), self.budget, self.cfg.delta, self.cfg.lam)
            (self.cfg.epsilon * pl).backward()
            p_loss = float(pl.detach())
        self.opt.step()
        return {"prune_loss": p_loss}

    def abort_step(self) -> None:
        """Drop a pending step (its server call failed); the next forward starts fresh."""
        self._pending = None

    @torch.no_grad()
    def predict_message(self, x: np.ndarray) -> bytes:
        """Inference: the activation message for ``x`` at the current budget, eval mode."""
        self.modules.eval()
        buf, _ = self._encode_out(x, kind_labels=None, step=0)
        return buf

    # -- state ----------------------------------------------------------------
    def filter_values(self) -> np.ndarray | None:
        return None if self.compressor is None else self.compressor.filter().detach().numpy().copy()

    def state(self) -> dict[str, np.ndarray]:
        return numpy_state(self.modules)

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        load_numpy_state(self.modules, state)
