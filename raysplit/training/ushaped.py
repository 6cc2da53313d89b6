"""U-shaped (label-private) split learning: the labels and the last layers stay on the client.

The model is cut twice (``models/cuts.py``), after layer n (``split_layer``) and after
layer m (``u_cut``): the client runs the head (1..n) and the tail (m+1..L, the classifier
and the loss), the server only the middle (n+1..m). One step is two round trips::

    client  head -> compressor (top-B)            --A1-->  server  decompressor -> middle
                                                                   -> compressor (top-B')
    client  decompressor -> tail -> loss(labels)  <--A2--
    client  backward of tail, decompressor        --G2-->  server  backward of compressor,
                                                                   middle, decompressor
    client  backward of compressor, head          <--G1--
            one optimizer step on each side

The compression module works on both paths: the client's compressor selects B of the
head's channels on the way up, the server's selects B' of the middle's channels on the
way down (the same share: B' = ceil(B·C/φ), every channel when B is every channel),
each with its own filter and pruneLoss, each decompressed on the far side. Every message
carries its client's HMAC tag as in plain split learning; no message carries labels, and
a U-shaped server refuses one that does, so the server's objects never hold a label.

Message sequence numbers: step s of a client sends A1 as 2s-1 and G2 as 2s, so the
shard's step log (retries, replay, checkpoints) works per message unchanged.

A server may interleave several clients' forwards and backwards; the middle's forward
keeps copies of what its backward needs (saved-tensor hooks), so an optimizer step for
one client between another's forward and backward is well defined: that client's
gradient is the one of the weights it saw (a staleness of at most one step, as in
asynchronous SGD).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, ContextManager

import numpy as np
import torch
from torch import nn

from raysplit import codec
from raysplit.compression.module import Compressor, Decompressor, compressed_size
from raysplit.config.split import SplitConfig
from raysplit.models.cuts import cut_model
from raysplit.training.client import SplitClient
from raysplit.training.guards import NonFiniteError, Refused, check_finite, check_finite_grads
from raysplit.training.objectives import make_regularizer
from raysplit.training.server import ServerResult, SplitServer, _wire_indices, decode
from raysplit.training.sgd import SGD
from raysplit.training.state import PrivateRng, uses_randomness
from raysplit.transport.base import Exchange, Reply, Transport

SEQS_PER_STEP = 2


@dataclass
class UNetwork:
    """Both sides' pieces (each side keeps its own). ``up_*``: the head's compression
    (client -> server); ``down_*``: the middle's (server -> client)."""

    head: nn.Sequential
    up_compressor: Compressor | None
    up_decompressor: Decompressor | None
    middle: nn.Sequential
    down_compressor: Compressor | None
    down_decompressor: Decompressor | None
    tail: nn.Sequential
    up_wire: tuple[int, ...]    # (φ, H', W') per sample, client -> server
    down_wire: tuple[int, ...]  # (C, H, W) per sample, server -> client


def build_u_network(cfg: SplitConfig) -> UNetwork:
    """Deterministic for ``cfg.seed``: client and server build the same pieces."""
    if cfg.u_cut is None:
        raise ValueError("build_u_network needs SplitConfig.u_cut (the second cut of --mode ushaped)")
    if cfg.torch_threads is not None:
        torch.set_num_threads(cfg.torch_threads)
    cm = cut_model(cfg.model, (cfg.split_layer, cfg.u_cut), cfg.input_shape, cfg.num_classes, seed=cfg.seed)
    (c1, h1, w1), down = cm.shapes[0], cm.shapes[1]
    if len(down) != 3:
        raise ValueError(f"the second cut needs a (C, H, W) activation; after layer {cfg.u_cut} it is {down}")
    if not cfg.use_module:
        return UNetwork(cm.pieces[0], None, None, cm.pieces[1], None, None, cm.pieces[2], (c1, h1, w1), down)
    phi = cfg.compressed_channels or c1
    up_c = Compressor(c1, phi, cfg.resolution, cfg.mask, cfg.init_scale)
    up_d = Decompressor(phi, c1, (h1, w1), cfg.resolution)
    # The way down keeps the resolution (r=1): the middle's maps are small already.
    down_c = Compressor(down[0], down[0], 1, cfg.mask, cfg.init_scale)
    down_d = Decompressor(down[0], down[0], down[1:], 1)
    return UNetwork(cm.pieces[0], up_c, up_d, cm.pieces[1], down_c, down_d, cm.pieces[2],
                    (phi, *compressed_size((h1, w1), cfg.resolution)), down)


def down_budget(up_budget: int, up_channels: int, down_channels: int) -> int:
    """B' for a message that sent B of φ channels up: the same share of the middle's
    channels, rounded up (every channel for every channel)."""
    return min(down_channels, -(-up_budget * down_channels // up_channels))


def _saving_copies() -> ContextManager:
    """Saved tensors are copies, so an in-place optimizer step before this graph's
    backward does not invalidate it."""
    return torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), lambda t: t)


class UClient(SplitClient):
    """The client of U-shaped training: head + compressor, and decompressor + tail + loss.

    Args: as for ``SplitClient``.
    """

    seqs_per_step = SEQS_PER_STEP

    def __init__(self, cfg: SplitConfig, client_id: int = 0, *, tenant_key: int = 0, key: bytes | None = None) -> None:
        # SplitClient's own constructor builds a one-cut network; this one builds both halves' pieces.
        self.cfg, self.client_id, self.tenant_key = cfg, int(client_id), int(tenant_key)
        self.key = self.grad_key = key
        net = build_u_network(cfg)
        self.head, self.compressor = net.head, net.up_compressor
        self.decompressor, self.tail = net.down_decompressor, net.tail
        self.wire_shape, self.down_wire = net.up_wire, net.down_wire
        self.channels = net.up_wire[0]
        self.codec = cfg.codec_config()
        self.groups = {"head": self.head, **({"compressor": self.compressor} if self.compressor is not None else {}),
                       **({"decompressor": self.decompressor} if self.decompressor is not None else {}),
                       "tail": self.tail}
        self.modules = nn.ModuleList(self.groups.values())
        named = list(self.modules.named_parameters())
        groups = [{"params": [p for n, p in named if not n.endswith("f_hat")], "weight_decay": cfg.weight_decay}]
        if any(n.endswith("f_hat") for n, _ in named):
            groups.append({"params": [p for n, p in named if n.endswith("f_hat")], "weight_decay": 0.0})
        self.opt = SGD(groups, lr=0.01, momentum=cfg.momentum)
        self.rng = PrivateRng(cfg.seed * 1000 + self.client_id, uses_randomness(self.modules))
        self.budget = self.channels
        self.step = 0
        self.regularizers, self.frozen = [], ()
        self._pending = None
        self._tail: tuple | None = None  # (down values leaf, loss) between A2 and G1
        from raysplit.training.methods import Stage

        self.set_stage(Stage() if self.compressor is not None else Stage(regularizers=()))

    def _up(self, x: np.ndarray, *, seq: int) -> tuple[bytes, torch.Tensor]:
        l_n = self.head(torch.from_numpy(np.require(x, np.float32, ["C", "W"])))
        if self.compressor is None:
            sel, idx = l_n, None
        else:
            sel, idx_t = self.compressor(l_n, self.budget)
            idx = None if idx_t is None else idx_t.numpy()
        check_finite(sel, "activation", f"client {self.client_id} step {self.step}")
        buf = codec.encode(sel.detach().numpy(), idx, (sel.shape[0], self.channels, *sel.shape[2:]), self.codec,
                           kind=codec.KIND_ACTIVATION, labels=None, step=seq, client_id=self.client_id,
                           tenant=self.tenant_key, cut=self.cfg.split_layer, key=self.key)
        return buf, sel

    def forward(self, x: np.ndarray, y: np.ndarray) -> bytes:
        """Head + compression: the activation message A1. The labels stay here."""
        if self._pending is not None:
            raise RuntimeError(f"client {self.client_id}: step {self._pending[0]} still awaits its gradient")
        self.modules.train()
        self.step += 1
        self.opt.zero_grad(set_to_none=True)
        with self.rng:
            buf, sel = self._up(x, seq=SEQS_PER_STEP * self.step - 1)
        self._pending = (self.step, sel)
        return buf

    def _down(self, buf: bytes, key) -> tuple[codec.Message, torch.Tensor]:
        msg = codec.decode(buf, key=key)
        if msg.kind != codec.KIND_ACTIVATION or msg.client_id != self.client_id or msg.labels is not None:
            raise ValueError(f"client {self.client_id}: expected the server's activation, got kind {msg.kind} of "
                             f"client {msg.client_id}")
        return msg, torch.from_numpy(msg.values).requires_grad_(True)

    def _logits(self, msg: codec.Message, values: torch.Tensor) -> torch.Tensor:
        dense = values if self.decompressor is None else self.decompressor(values, torch.from_numpy(msg.indices))
        return self.tail(dense)

    def tail_step(self, a2: bytes, y: np.ndarray) -> tuple[bytes, float, int]:
        """The server's activation A2 -> tail, loss on the labels, backward to A2: the
        gradient message G2, the loss and the samples classified right."""
        step, _ = self._pending
        msg, values = self._down(a2, self.grad_key)
        if msg.step != SEQS_PER_STEP * step - 1:
            raise ValueError(f"client {self.client_id}: A2 answers message {msg.step}, expected {2 * step - 1}")
        with self.rng:
            logits = self._logits(msg, values)
        labels = torch.from_numpy(np.asarray(y, dtype=np.int64))
        loss = nn.functional.cross_entropy(logits, labels)
        check_finite(loss.detach().reshape(1), "loss", f"client {self.client_id} step {step}")
        loss.backward()  # the tail's and the decompressor's gradients stay for the optimizer step
        check_finite(values.grad, "gradient", f"client {self.client_id} step {step}, to the server")
        g2 = codec.encode(values.grad.numpy(), _wire_indices(msg.indices, msg.shape[1]), msg.shape, self.codec,
                          kind=codec.KIND_GRADIENT, step=SEQS_PER_STEP * step, client_id=self.client_id,
                          tenant=self.tenant_key, cut=self.cfg.u_cut, key=self.key)
        correct = int((logits.detach().argmax(1) == labels).sum())
        return g2, float(loss.detach()), correct

    def backward(self, grad_buf: bytes) -> dict[str, float]:
        """The server's gradient G1 for the head's channels, the regularisers, and one
        optimizer step for every client part."""
        if self._pending is None:
            raise RuntimeError(f"client {self.client_id}: gradient received with no step pending")
        msg = codec.decode(grad_buf, key=self.grad_key)
        step, sel = self._pending
        if msg.kind != codec.KIND_GRADIENT or msg.step != SEQS_PER_STEP * step or msg.client_id != self.client_id:
            raise ValueError(f"client {self.client_id}: expected the gradient of message {2 * step}, got kind "
                             f"{msg.kind} for message {msg.step} of client {msg.client_id}")
        if msg.values.shape != tuple(sel.shape):
            raise ValueError(f"gradient shape {msg.values.shape} does not match the activation {tuple(sel.shape)}")
        self._pending = None
        # no zero_grad here: forward() zeroed them, and tail_step added the tail's for this step
        return self._apply_gradient(sel, msg.values, step)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "seq": SEQS_PER_STEP * self.step, "seqs_per_step": SEQS_PER_STEP}

    @torch.no_grad()
    def predict_message(self, x: np.ndarray) -> bytes:
        self.modules.eval()
        buf, _ = self._up(x, seq=0)
        return buf

    @torch.no_grad()
    def predict_from(self, a2: bytes) -> np.ndarray:
        """Classes from the server's activation for an inference message."""
        self.modules.eval()
        msg = codec.decode(a2, key=self.grad_key)
        return self._logits(msg, torch.from_numpy(msg.values)).argmax(1).numpy().astype(np.int64)

    # -- the protocol (called by training/loop.py) ---------------------------------------
    def exchange_step(self, transport: Transport, x, y, *, lr: float, phase: int,
                      compute: Callable[[], ContextManager] = contextlib.nullcontext):
        """One U-shaped step over ``transport`` (two round trips)."""
        t0 = time.perf_counter()
        with compute():
            a1 = self.forward(x, y)
        t1 = time.perf_counter()
        try:
            ex1 = transport.exchange(a1, lr=lr, phase=phase)
            t2 = time.perf_counter()
            with compute():
                g2, loss, correct = self.tail_step(ex1.grad, y)
            t3 = time.perf_counter()
            ex2 = transport.exchange(g2, lr=lr, phase=phase)
        except BaseException:
            self.abort_step()
            raise
        t4 = time.perf_counter()
        with compute():
            reg = self.backward(ex2.grad)
        t5 = time.perf_counter()
        r1, r2 = ex1.reply, ex2.reply
        result = ServerResult(self.client_id, self.step, ex2.grad, loss, correct, len(y),
                              r1.result.compute_s + r2.result.compute_s, 1)
        ex = Exchange(Reply(result, r1.queue_s + r2.queue_s), ex1.bytes_up + ex2.bytes_up,
                      ex1.bytes_down + ex2.bytes_down, ex1.seconds + ex2.seconds)
        times = {"forward_s": t1 - t0 + (t3 - t2), "exchange_s": (t2 - t1) + (t4 - t3), "backward_s": t5 - t4}
        return ex, reg, times

    def evaluate_on(self, transport: Transport, test, batch_size: int) -> tuple[int, int, int]:
        """Split inference: (correct, total, bytes sent up)."""
        from raysplit.data import batches

        correct = total = nbytes = 0
        for x, y in batches(test, batch_size, shuffle=False, seed=0):
            up = self.predict_message(x)
            pred = self.predict_from(transport.predict(up))
            nbytes += len(up)
            correct += int((pred == y).sum())
            total += len(y)
        return correct, total, nbytes

    def abort_step(self) -> None:
        self._pending = None
        self.opt.zero_grad(set_to_none=True)


class UServer(SplitServer):
    """The server of U-shaped training: decompressor + middle + compressor. It never
    computes a loss and never sees a label.

    Args: as for ``SplitServer``.
    """

    kinds = (codec.KIND_ACTIVATION, codec.KIND_GRADIENT)

    def __init__(self, cfg: SplitConfig, shard_id: int = 0, device: str = "cpu", *, plan=None, tenant_key: int = 0,
                 keyring=None) -> None:
        from raysplit.training.methods import Stage
        from raysplit.training.network import resolve_device

        self.cfg, self.shard_id, self.tenant_key, self.keyring = cfg, shard_id, int(tenant_key), keyring
        self.device = resolve_device(device)
        net = build_u_network(cfg)
        self.decompressor, self.middle, self.compressor = net.up_decompressor, net.middle, net.down_compressor
        self.tail = self.middle  # what SplitServer's helpers call the server's network
        # SplitServer's attributes its inherited helpers read: one cut, no whole model, no teacher
        self.whole, self.cuts, self.teacher, self.distill = None, (cfg.split_layer,), None, None
        self.wire_shape, self.down_wire = net.up_wire, net.down_wire
        self.channels = net.up_wire[0]
        self.codec = cfg.codec_config()
        self.groups = {**({"decompressor": self.decompressor} if self.decompressor is not None else {}),
                       "middle": self.middle,
                       **({"compressor": self.compressor} if self.compressor is not None else {})}
        self.modules = nn.ModuleList(self.groups.values()).to(self.device)
        named = list(self.modules.named_parameters())
        groups = [{"params": [p for n, p in named if not n.endswith("f_hat")], "weight_decay": cfg.weight_decay}]
        if any(n.endswith("f_hat") for n, _ in named):
            groups.append({"params": [p for n, p in named if n.endswith("f_hat")], "weight_decay": 0.0})
        self.opt = SGD(groups, lr=0.01, momentum=cfg.momentum)
        self.rng = PrivateRng(cfg.seed * 1000 + 999 - shard_id, uses_randomness(self.modules))
        self.plan, self.phase = plan, None
        self.regularizers = []
        self.set_stage(Stage() if self.compressor is not None else Stage(regularizers=()))
        self.steps = 0
        self.pending: dict[tuple[int, int], tuple] = {}  # (client, step) -> the forward's graph

    def set_stage(self, stage) -> None:
        self.frozen = tuple(g for g in stage.frozen if g in self.groups)
        for name, module in self.groups.items():
            module.requires_grad_(name not in self.frozen)
        # pruneLoss grows as exp(δ(Σf − B)): with more channels on the way down than up, the same δ
        # would start it far steeper (exp(20) for 256 channels, not exp(10) for 128, and an
        # update that switches every channel off). δ is scaled so both paths start alike.
        delta = self.cfg.delta * self.channels / self.down_wire[0]
        self.regularizers = [make_regularizer(r, delta=delta, lam=self.cfg.lam, epsilon=self.cfg.epsilon)
                             for r in stage.regularizers] if self.compressor is not None else []

    def _enter(self, phase: int) -> None:
        entering = phase != self.phase and self.phase is not None
        super()._enter(phase)
        if entering and self.plan is not None and self.compressor is not None:
            p = self.plan.phases[phase]
            if p.reset is not None and phase > 0:  # the down filter is reset as the client resets its own
                g = torch.Generator().manual_seed(self.cfg.seed + p.first_epoch + 7919)
                self.compressor.reset_filter(p.reset, self.plan.phases[phase - 1].budget, generator=g)

    def _check(self, msg: codec.Message, want_labels: bool) -> None:
        if msg.labels is not None:
            raise Refused("labels", f"message from client {msg.client_id} carries labels: a label-private (U-shaped) "
                                    f"server takes none")
        if msg.tenant != self.tenant_key:
            raise Refused("tenant", f"message from client {msg.client_id} belongs to tenant key {msg.tenant}; this "
                                    f"shard serves {self.tenant_key}")
        up = msg.kind == codec.KIND_ACTIVATION
        cut, shape = (self.cfg.split_layer, self.wire_shape) if up else (self.cfg.u_cut, self.down_wire)
        if msg.cut != cut:
            raise Refused("cut", f"message from client {msg.client_id} belongs to cut {msg.cut}; expected {cut}")
        if tuple(msg.shape[1:]) != tuple(shape):
            raise Refused("shape", f"message from client {msg.client_id} has shape {msg.shape[1:]}, this shard "
                                   f"expects {shape}")
        if msg.values.size and not np.isfinite(msg.values).all():
            raise Refused("nonfinite", f"message from client {msg.client_id} step {msg.step} holds NaN/Inf values")

    def verify(self, buf) -> codec.Message:
        msg = decode(buf, self.keyring)
        self._check(msg, want_labels=False)
        return msg

    def _key(self, client: int):
        return None if self.keyring is None else self.keyring.client_key(client)

    def train_step(self, buffers: list[bytes], lr: float, phase: int = 0) -> list[ServerResult]:
        """One message: an activation A1 (forward: returns A2) or a gradient G2 (backward
        and optimizer step: returns G1)."""
        if len(buffers) != 1:
            raise ValueError(f"a U-shaped server takes one message at a time, got {len(buffers)}")
        t0 = time.perf_counter()
        msg = self.verify(buffers[0])
        self._enter(phase)
        self.set_lr(lr)
        out = self._forward(msg) if msg.kind == codec.KIND_ACTIVATION else self._backward(msg)
        return [ServerResult(msg.client_id, msg.step, out, float("nan"), 0, int(msg.shape[0]),
                             time.perf_counter() - t0, 1)]

    def _forward(self, msg: codec.Message) -> bytes:
        step = (msg.step + 1) // SEQS_PER_STEP
        for key in [k for k in self.pending if k[0] == msg.client_id and k[1] < step]:
            del self.pending[key]  # an older forward whose backward never came (its client restarted)
        self.modules.train()
        leaf = torch.from_numpy(msg.values).to(self.device).requires_grad_(True)
        b = len(msg.indices)
        with self.rng, _saving_copies():
            dense = leaf if self.decompressor is None else self.decompressor(
                leaf, torch.from_numpy(msg.indices).to(self.device))
            mid = self.middle(dense)
            b2 = down_budget(b, self.channels, mid.shape[1])
            if self.compressor is None:
                sel, idx = mid, None
            else:
                sel, idx_t = self.compressor(mid, b2)
                idx = None if idx_t is None else idx_t.cpu().numpy()
        check_finite(sel, "activation", f"shard {self.shard_id}, client {msg.client_id} step {step}")
        self.pending[(msg.client_id, step)] = (msg, leaf, sel, b2)
        return codec.encode(sel.detach().cpu().numpy(), idx, (sel.shape[0], mid.shape[1], *sel.shape[2:]),
                            self.codec, kind=codec.KIND_ACTIVATION, step=msg.step, client_id=msg.client_id,
                            tenant=self.tenant_key, cut=self.cfg.u_cut, key=self._key(msg.client_id))

    def _backward(self, g2: codec.Message) -> bytes:
        step = g2.step // SEQS_PER_STEP
        if (g2.client_id, step) not in self.pending:
            raise Refused("replayed", f"client {g2.client_id}: no forward of step {step} is pending here")
        a1, leaf, sel, b2 = self.pending.pop((g2.client_id, step))
        if g2.values.shape != tuple(sel.shape):
            raise Refused("shape", f"gradient of shape {g2.values.shape} for an activation of {tuple(sel.shape)}")
        self.opt.zero_grad(set_to_none=True)
        (sel * torch.from_numpy(g2.values).to(self.device)).sum().backward()
        for reg in self.regularizers:
            weighted, _ = reg(self.compressor, b2)
            if weighted.requires_grad:
                weighted.backward()
        check_finite(leaf.grad, "gradient", f"shard {self.shard_id}, client {g2.client_id} step {step}")
        check_finite_grads(self.modules.parameters(), f"shard {self.shard_id}, the middle")
        g1 = codec.encode(leaf.grad.cpu().numpy(), _wire_indices(a1.indices, a1.shape[1]), a1.shape, self.codec,
                          kind=codec.KIND_GRADIENT, step=g2.step, client_id=g2.client_id, tenant=self.tenant_key,
                          cut=self.cfg.split_layer, key=self._key(g2.client_id))
        self.opt.step()
        self.steps += 1
        return g1

    @torch.no_grad()
    def predict(self, buffers: list[bytes]) -> list[bytes]:
        """Inference: the middle's (compressed) activation for each message."""
        out = []
        self.modules.eval()
        for b in buffers:
            msg = self.verify(b)
            dense = torch.from_numpy(msg.values).to(self.device)
            if self.decompressor is not None:
                dense = self.decompressor(dense, torch.from_numpy(msg.indices).to(self.device))
            mid = self.middle(dense)
            b2 = down_budget(len(msg.indices), self.channels, mid.shape[1])
            sel, idx_t = (mid, None) if self.compressor is None else self.compressor(mid, b2)
            idx = None if idx_t is None else idx_t.cpu().numpy()
            out.append(codec.encode(sel.cpu().numpy(), idx, (sel.shape[0], mid.shape[1], *sel.shape[2:]), self.codec,
                                    kind=codec.KIND_ACTIVATION, step=0, client_id=msg.client_id,
                                    tenant=self.tenant_key, cut=self.cfg.u_cut, key=self._key(msg.client_id)))
        return out


def client_half(cfg: SplitConfig, client_id: int = 0, **kw) -> SplitClient:
    """The client of a run: U-shaped when ``cfg.u_cut`` is set."""
    return (UClient if cfg.u_cut is not None else SplitClient)(cfg, client_id, **kw)


def server_half(cfg: SplitConfig, shard_id: int = 0, device: str = "cpu", **kw) -> SplitServer:
    """The server of a run: U-shaped when ``cfg.u_cut`` is set."""
    return (UServer if cfg.u_cut is not None else SplitServer)(cfg, shard_id, device, **kw)


__all__ = ["UClient", "UServer", "UNetwork", "build_u_network", "client_half", "server_half", "down_budget",
           "NonFiniteError"]
