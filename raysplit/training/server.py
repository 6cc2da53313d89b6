"""The server half of split training, without Ray: decompressor + tail + optimizer.

``train_step`` takes activation messages from one or more clients and runs them as one
forward/backward (the micro-batches are concatenated after decompression). Each
client's loss is the mean over its own samples; the tail's gradient is the mean of the
clients' gradients, so a merged step moves the tail like one step of the average client,
and every client gets exactly the gradient of its own loss. Which loss and which frozen
groups apply is the plan's stage for the phase the messages belong to.

A server either serves one cut (the usual split: decompressor + the layers after
``split_layer``; a message cut elsewhere is refused) or, given ``cuts``, holds the whole
model and starts each message from the layer its header names (Krouka et al.'s
per-inference split: the client picks the cut, the server runs the rest). A whole-model
message may carry a subset of the channels at its cut; the others are taken from the
model's own value there on a zero input, which is what they are for every input when
they do not depend on it, so a client can leave out units that pruning made constant or
unused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from raysplit import codec
from raysplit.codec.format import unpack_header
from raysplit.config.split import SplitConfig
from raysplit.models.whole import whole_model
from raysplit.models.bottleneck import features
from raysplit.training import distill
from raysplit.training.guards import Malformed, NonFiniteError, Refused, check_finite, check_finite_grads
from raysplit.training.methods import Plan, Stage
from raysplit.training.network import build_network, resolve_device
from raysplit.training.objectives import Outputs, distill_loss, task_loss
from raysplit.training.optimizers import make_optimizer, optimizer_name
from raysplit.training.state import PrivateRng, load_numpy_state, numpy_state, uses_randomness


@dataclass(frozen=True)
class ServerResult:
    """The server's answer to one activation message.

    Args:
        client_id, step: echoed from the message.
        grad: the gradient message (bytes) for the sent channels.
        loss: the client's task loss (mean over its samples).
        correct: its samples the tail classified right.
        samples: its samples.
        compute_s: seconds of the (merged) server step that computed it.
        merged: micro-batches in that step.
    """

    client_id: int
    step: int
    grad: bytes
    loss: float
    correct: int
    samples: int
    compute_s: float
    merged: int


class SplitServer:
    """The server half: decompressor + tail + the task loss.

    Args:
    cfg: the split network's configuration (same on every client and shard).
    shard_id: this replica's number.
    device: "auto" (CUDA if visible, else CPU), "cpu" or "cuda".
    plan: the run's plan; a message's phase selects its stage (None: one plain stage).
    tenant_key: messages of another tenant are refused.
    cuts: None: serve the one cut ``cfg.split_layer``; a sequence of cuts: hold the whole
        model (no compression module) and start each message from its cut, one of these.
    keyring: the tenant's keys (``raysplit.keys.Keyring``): a message must carry the tag of
        the client its header names, and gradients go back tagged with that client's key.
        None: no tags.
    """

    #: message kinds a training call takes (admission refuses others before decoding)
    kinds = (codec.KIND_ACTIVATION,)

    def __init__(
        self, cfg: SplitConfig, shard_id: int = 0, device: str = "cpu", *, plan: Plan | None = None,
        tenant_key: int = 0, cuts: Sequence[int] | None = None, keyring=None,
    ) -> None:
        self.cfg = cfg
        self.shard_id = shard_id
        self.tenant_key = int(tenant_key)
        self.keyring = keyring
        self.device = resolve_device(device)
        self.whole = None
        if cuts is None:
            net = build_network(cfg)
            self.decompressor, self.decoder, self.tail = net.decompressor, net.decoder, net.tail
            self.channels = net.channels
            self.wire_shape = net.wire_shape
            self.target_shape = net.target_shape
            self.cuts: tuple[int, ...] = (cfg.split_layer,)
        else:
            if cfg.use_module:
                raise ValueError("a whole-model server (cuts=...) runs without the compression module")
            if cfg.bottleneck is not None:
                raise ValueError("a whole-model server (cuts=...) holds the model itself, not a bottleneck student")
            self.whole = whole_model(cfg.model, cfg.input_shape, cfg.num_classes, seed=cfg.seed)
            self.cuts = tuple(sorted({self.whole.check_cut(c) for c in cuts}))
            if not self.cuts:
                raise ValueError("cuts must name at least one cut")
            self.decompressor, self.decoder, self.tail = None, None, self.whole.layers
            self.target_shape = None
            self._fill: dict[int, torch.Tensor] = {}  # cut -> the model's value there on a zero input
        self.codec = cfg.codec_config()
        self.groups = {**({"decompressor": self.decompressor} if self.decompressor is not None else {}),
                       **({"decoder": self.decoder} if self.decoder is not None else {}),
                       "tail": self.tail}
        self.modules = torch.nn.ModuleList(self.groups.values()).to(self.device)
        # A bottleneck student's later layers start from its teacher's, which stays here frozen.
        self.teacher = distill.server_teacher(cfg, self.tail, self.device)
        self.distill = None
        self.opt = self._new_optimizer("sgd", 0.01)
        self.rng = PrivateRng(cfg.seed * 1000 + 999 - shard_id, uses_randomness(self.modules))
        self.plan = plan
        self.phase: int | None = None
        self.set_stage(Stage(regularizers=()))
        self.steps = 0

    def set_stage(self, stage: Stage) -> None:
        if stage.distills:
            if self.teacher is None:
                raise ValueError(f"stage {stage.name!r} distils from a teacher, and this server has none (--teacher)")
            self.distill = distill_loss(stage.task_loss, alpha=self.cfg.kd_alpha, tau=self.cfg.kd_tau)
        else:
            self.loss_fn, self.distill = task_loss(stage.task_loss), None
        self.frozen = tuple(g for g in stage.frozen if g in self.groups)
        for name, module in self.groups.items():
            module.requires_grad_(name not in self.frozen)
        if optimizer_name(self.opt) != stage.optimizer:
            self.opt = self._new_optimizer(stage.optimizer, self.opt.param_groups[0]["lr"])

    def _new_optimizer(self, name: str, lr: float):
        return make_optimizer(name, [{"params": list(self.modules.parameters())}], lr=lr,
                              momentum=self.cfg.momentum, weight_decay=self.cfg.weight_decay)

    def _enter(self, phase: int) -> None:
        if phase != self.phase and self.plan is not None:
            if not 0 <= phase < len(self.plan.phases):
                raise ValueError(f"phase {phase} out of range: the plan has {len(self.plan.phases)}")
            self.set_stage(self.plan.phases[phase].stage)
        self.phase = phase

    def set_lr(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr

    def _check(self, msg: codec.Message, want_labels: bool) -> None:
        if msg.kind != codec.KIND_ACTIVATION:
            raise Refused("kind", f"message from client {msg.client_id} is not an activation (kind {msg.kind})")
        if msg.tenant != self.tenant_key:
            raise Refused(
                "tenant",
                f"message from client {msg.client_id} belongs to tenant key {msg.tenant}; this shard serves "
                f"{self.tenant_key}",
            )
        if msg.cut not in self.cuts:
            where = (f"runs from layer {self.cfg.split_layer}" if self.whole is None else
                     f"starts from cuts {', '.join(map(str, self.cuts))}")
            raise Refused("cut",
                          f"message from client {msg.client_id} was cut after layer {msg.cut}; this shard {where}")
        want = self.wire_shape if self.whole is None else self.whole.shapes[msg.cut]
        if tuple(msg.shape[1:]) != tuple(want):
            raise Refused(
                "shape",
                f"message from client {msg.client_id} has shape {msg.shape[1:]}, this shard expects {tuple(want)}"
                + ("" if self.whole is None else f" at cut {msg.cut}"),
            )
        if msg.values.size and not np.isfinite(msg.values.sum()) and not np.isfinite(msg.values).all():
            raise Refused("nonfinite", f"message from client {msg.client_id} step {msg.step} holds NaN/Inf values")
        if want_labels and msg.labels is None:
            raise Refused("labels", f"training message from client {msg.client_id} step {msg.step} carries no labels")
        if msg.labels is not None and ((msg.labels < 0).any() or (msg.labels >= self.cfg.num_classes).any()):
            raise Refused(
                "labels",
                f"labels from client {msg.client_id} outside 0..{self.cfg.num_classes - 1}: "
                f"{np.unique(msg.labels[(msg.labels < 0) | (msg.labels >= self.cfg.num_classes)])[:5]}"
            )

    def verify(self, buf) -> codec.Message:
        """Decode and check a training message without computing anything (a retry is
        answered from the step log only if it is authentic)."""
        msg = decode(distill.unbundle(buf)[0], self.keyring)
        self._check(msg, want_labels=True)
        return msg

    def _dense_input(self, msg: codec.Message, values: torch.Tensor) -> torch.Tensor:
        if self.whole is not None and _wire_indices(msg.indices, msg.shape[1]) is not None:
            # Channels left out do not depend on the input (or are not used after this
            # cut): the model's own value there stands in for them. (Any order is fine.)
            dense = self._fill_at(msg.cut).expand(len(values), *msg.shape[1:]).clone()
            dense[:, torch.from_numpy(msg.indices).to(values.device)] = values
            return dense
        if self.decompressor is None:
            if _wire_indices(msg.indices, msg.shape[1]) is None:
                return values  # plain split learning: all channels, in order
            # a subset or another order (NAIR's importance-ordered slices, maybe cut short):
            # back at their channels, zeros for the rest
            dense = values.new_zeros((values.shape[0], *msg.shape[1:]))
            return dense.index_copy(1, torch.from_numpy(msg.indices).to(values.device), values)
        return self.decompressor(values, torch.from_numpy(msg.indices).to(values.device))

    @torch.no_grad()
    def _fill_at(self, cut: int) -> torch.Tensor:
        if cut not in self._fill:
            was = self.tail.training
            self.tail.eval()
            self._fill[cut] = self.whole.run(torch.zeros(1, *self.whole.shapes[0], device=self.device), 0, cut)
            self.tail.train(was)
        return self._fill[cut]

    def _weights_changed(self) -> None:
        if self.whole is not None:
            self._fill.clear()

    def _forward(self, msgs: list[codec.Message], inputs: list[torch.Tensor]) -> torch.Tensor:
        """The tail's output for all messages, in order: one forward on a one-cut server;
        on a whole-model server one per cut present, each from its cut."""
        if self.whole is None:
            dense = torch.cat(inputs)
            return self.tail(self.decoder(dense) if self.decoder is not None else dense)
        out: list = [None] * len(msgs)
        for cut in sorted({m.cut for m in msgs}):
            at = [i for i, m in enumerate(msgs) if m.cut == cut]
            logits = self.whole.run(torch.cat([inputs[i] for i in at]), cut, self.whole.depth)
            for i, part in zip(at, logits.split([len(inputs[i]) for i in at])):
                out[i] = part
        return torch.cat(out)

    def _teacher_outputs(self, msgs: list[codec.Message], teachers: list[bytes | None]) -> Outputs:
        """The teacher's outputs from the activations its head computed on the clients."""
        values = []
        for m, buf in zip(msgs, teachers):
            if buf is None:
                raise ValueError(f"distillation step {m.step} of client {m.client_id} carries no teacher activation")
            t = decode(buf, self.keyring)
            same = (t.kind, t.step, t.client_id, t.tenant, t.cut) == (m.kind, m.step, m.client_id, m.tenant, m.cut)
            if not same or tuple(t.shape) != (m.shape[0], *self.target_shape):
                raise ValueError(
                    f"teacher activation of client {m.client_id} step {m.step} does not go with it: kind {t.kind}, "
                    f"step {t.step}, client {t.client_id}, shape {t.shape} (expected {(m.shape[0], *self.target_shape)})"
                )
            values.append(torch.from_numpy(t.dense()))
        with torch.no_grad():
            feats, logits = features(None, self.teacher.rest, torch.cat(values).to(self.device))
        return Outputs(tuple(feats), logits)

    def train_step(self, buffers: list[bytes], lr: float, phase: int = 0) -> list[ServerResult]:
        """One forward/backward over every message (all of one phase); returns, per
        message, its gradient message and what the step measured."""
        t0 = time.perf_counter()
        parts = [distill.unbundle(b) for b in buffers]
        msgs = [decode(a, self.keyring) for a, _ in parts]
        for m in msgs:
            self._check(m, want_labels=True)
        self._enter(phase)
        self.set_lr(lr)
        self.modules.train()
        for g in self.frozen:  # frozen means unchanged: batch norm keeps its running statistics
            self.groups[g].eval()
        labels = torch.from_numpy(np.concatenate([m.labels for m in msgs])).to(self.device)
        with self.rng:
            leaves = [torch.from_numpy(m.values).to(self.device).requires_grad_(True) for m in msgs]
            inputs = [self._dense_input(m, v) for m, v in zip(msgs, leaves)]
            if self.distill is None:
                if any(t is not None for _, t in parts):
                    raise ValueError(f"phase {phase} does not distil, yet a message carries a teacher activation")
                logits = self._forward(msgs, inputs)
            else:
                feats, logits = features(self.decoder, self.tail, torch.cat(inputs))
        if self.distill is None:
            per_sample = self.loss_fn(logits, labels)
        else:
            teacher = self._teacher_outputs(msgs, [t for _, t in parts])
            per_sample = self.distill(Outputs(tuple(feats), logits), teacher, labels)
        bounds = np.cumsum([0] + [len(m.labels) for m in msgs])
        losses = [per_sample[a:b].mean() for a, b in zip(bounds[:-1], bounds[1:])]
        total = torch.stack(losses).sum()
        if not torch.isfinite(total):
            bad = [(m.client_id, m.step) for m, l in zip(msgs, losses) if not torch.isfinite(l)]
            raise NonFiniteError("loss", f"(client, step) {bad}")
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        if len(msgs) > 1:
            for p in self.modules.parameters():
                if p.grad is not None:
                    p.grad /= len(msgs)
        # Everything that can fail happens before the optimizer step, so a failed step
        # changes nothing (the shard then retries its messages one by one).
        for m, leaf in zip(msgs, leaves):
            check_finite(leaf.grad, "gradient", f"shard {self.shard_id}, client {m.client_id} step {m.step}")
        check_finite_grads(self.modules.parameters(), f"shard {self.shard_id}, the tail")
        correct = (logits.detach().argmax(1) == labels).cpu().numpy()
        grads = [
            codec.encode(
                leaf.grad.cpu().numpy(),
                _wire_indices(m.indices, m.shape[1]),
                m.shape,
                self.codec,
                kind=codec.KIND_GRADIENT,
                step=m.step,
                client_id=m.client_id,
                tenant=self.tenant_key,
                cut=m.cut,
                key=None if self.keyring is None else self.keyring.client_key(m.client_id),
            )
            for m, leaf in zip(msgs, leaves)
        ]
        self.opt.step()
        self._weights_changed()
        self.steps += 1
        seconds = time.perf_counter() - t0
        return [
            ServerResult(m.client_id, m.step, g, float(l.detach()), int(correct[a:b].sum()), int(b - a), seconds,
                         len(msgs))
            for m, g, l, a, b in zip(msgs, grads, losses, bounds[:-1], bounds[1:])
        ]

    @torch.no_grad()
    def predict(self, buffers: list[bytes], *, key: bytes | None = None) -> list[np.ndarray]:
        """Inference: class predictions for each message (eval mode, nothing is learned).
        The messages run through the tail as one batch; a channel-major message cut short
        runs on the channels that arrived, zeros elsewhere. With ``key``, a message whose
        HMAC tag is missing or wrong is refused; without it, the server's keyring (if any)
        checks each message's tag as in training."""
        return self.predict_messages([codec.decode(b, key=key) if key is not None else decode(b, self.keyring)
                                      for b in buffers])

    @torch.no_grad()
    def predict_messages(self, msgs: list[codec.Message]) -> list[np.ndarray]:
        """:meth:`predict` for messages already decoded (a server that decodes each request
        on its own, so that one bad message fails alone)."""
        for m in msgs:
            self._check(m, want_labels=False)
        if not msgs:
            return []
        self.modules.eval()
        inputs = [self._dense_input(m, torch.from_numpy(m.values).to(self.device)) for m in msgs]
        pred = self._forward(msgs, inputs).argmax(1).cpu().numpy().astype(np.int64)
        bounds = np.cumsum([0] + [m.shape[0] for m in msgs])
        return [pred[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def modules_state(self) -> dict[str, np.ndarray]:
        """Decompressor + tail as numpy: what replica averaging and saving use."""
        return numpy_state(self.modules)

    def load_modules_state(self, state: dict[str, np.ndarray]) -> None:
        load_numpy_state(self.modules, state)
        self.modules.to(self.device)
        self._weights_changed()

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: modules, momentum, steps, RNG."""
        return {
            "modules": {k: v.detach().cpu().clone() for k, v in self.modules.state_dict().items()},
            "optimizer": self.opt.state_dict(),
            "optimizer_kind": optimizer_name(self.opt),
            "steps": self.steps,
            "rng": self.rng.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.modules.load_state_dict(state["modules"])
        self.modules.to(self.device)
        self._weights_changed()
        kind = state.get("optimizer_kind", "sgd")
        if optimizer_name(self.opt) != kind:
            self.opt = self._new_optimizer(kind, self.opt.param_groups[0]["lr"])
        self.opt.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])
        self.rng.load_state_dict(state["rng"])


def decode(buf, keyring=None) -> codec.Message:
    """``codec.decode`` with the key of the client the header names (with a keyring), its
    refusals named: unauthenticated (no tag, or not this tenant's), NaN/Inf, or malformed."""
    try:
        key = None
        if keyring is not None:
            header, _ = unpack_header(memoryview(buf))
            key = keyring.client_key(header.client_id)
        return codec.decode(buf, key=key)
    except (codec.CodecError, TypeError) as e:
        text = str(e)
        reason = ("unauthenticated" if ("HMAC" in text or "tag" in text) else
                  "nonfinite" if "NaN" in text else "malformed")
        raise Malformed(reason, text) from None


def _wire_indices(indices: np.ndarray, channels: int) -> np.ndarray | None:
    """None (the codec's "all channels in order" flag) when nothing was left out."""
    if len(indices) == channels and np.array_equal(indices, np.arange(channels)):
        return None
    return indices
