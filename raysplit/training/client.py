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
from raysplit.config.split import SplitConfig
from raysplit.training.guards import check_finite, check_finite_grads
from raysplit.training.methods import Stage
from raysplit.training.network import build_network
from raysplit.training import distill
from raysplit.training.objectives import Regularizer, make_regularizer
from raysplit.training.optimizers import make_optimizer, optimizer_name
from raysplit.training.state import PrivateRng, load_numpy_state, numpy_state, uses_randomness


class SplitClient:
    """Args:
    cfg: the split network's configuration (same on every client and shard).
    client_id: carried in every message; the server echoes it.
    tenant_key: carried in every message (``raysplit.identity.tenant_key``), so a shard can
        refuse another tenant's traffic.
    key: this client's HMAC key (``raysplit.keys.client_key``): every message it sends is
        tagged with it, and a gradient without its tag is refused. None: no tags.
    """

    def __init__(self, cfg: SplitConfig, client_id: int = 0, *, tenant_key: int = 0, key: bytes | None = None) -> None:
        self.cfg = cfg
        self.client_id = int(client_id)
        self.tenant_key = int(tenant_key)
        self.key = key
        self.grad_key = key  # what a gradient's tag is checked with (a replay from a checkpoint: None)
        net = build_network(cfg)
        self.head, self.compressor = net.head, net.compressor
        self.channels = net.channels
        self.wire_shape = net.wire_shape
        self.codec = cfg.codec_config()
        # Named parameter groups: what a stage can freeze.
        self.groups = {"head": self.head, **({"compressor": self.compressor} if self.compressor is not None else {})}
        self.modules = torch.nn.ModuleList(self.groups.values())
        named = list(self.modules.named_parameters())
        decay = [p for n, p in named if not n.endswith("f_hat")]
        no_decay = [p for n, p in named if n.endswith("f_hat")]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        self._param_groups = groups
        # An empty head (split_layer 0, no module) has nothing to train.
        self.opt = self._new_optimizer("sgd") if named else None
        # A bottleneck student that distils: the teacher's head computes t_ed(x), the targets.
        self.teacher = distill.client_teacher(cfg)
        self.distilling = False
        self.rng = PrivateRng(cfg.seed * 1000 + self.client_id, uses_randomness(self.modules))
        self.budget = self.channels
        self.step = 0
        self.regularizers: list[Regularizer] = []
        self.frozen: tuple[str, ...] = ()
        self._pending: tuple[int, torch.Tensor] | None = None
        # Until a plan says otherwise: totalLoss with the module, the plain loss without.
        self.set_stage(Stage() if self.compressor is not None else Stage(regularizers=()))

    # -- schedule -------------------------------------------------------------
    def set_stage(self, stage: Stage) -> None:
        """Objectives and frozen groups of a phase (the server takes its own part)."""
        self.regularizers = [
            make_regularizer(name, delta=self.cfg.delta, lam=self.cfg.lam, epsilon=self.cfg.epsilon)
            for name in stage.regularizers
        ]
        if self.regularizers and self.compressor is None:
            raise ValueError(f"stage {stage.name!r} regularises the compression module, which this network lacks")
        if stage.distills and self.teacher is None:
            raise ValueError(f"stage {stage.name!r} distils from a teacher, and this client has none (--teacher)")
        self.distilling = stage.distills
        self.frozen = tuple(g for g in stage.frozen if g in self.groups)
        for name, module in self.groups.items():
            module.requires_grad_(name not in self.frozen)
        if self.opt is not None and optimizer_name(self.opt) != stage.optimizer:
            self.opt = self._new_optimizer(stage.optimizer)

    def _new_optimizer(self, name: str):
        lr = self.opt.param_groups[0]["lr"] if getattr(self, "opt", None) is not None else 0.01
        return make_optimizer(name, self._param_groups, lr=lr, momentum=self.cfg.momentum,
                              weight_decay=self.cfg.weight_decay)

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
    def _encode_out(self, x: np.ndarray, *, labels: np.ndarray | None, step: int) -> tuple[bytes, torch.Tensor]:
        l_n = self.head(torch.from_numpy(np.require(x, np.float32, ["C", "W"])))
        if self.compressor is None:
            sel, idx = l_n, None
        else:
            sel, idx_t = self.compressor(l_n, self.budget)
            idx = None if idx_t is None else idx_t.numpy()
        check_finite(sel, "activation", f"client {self.client_id} step {step}")
        buf = codec.encode(
            sel.detach().numpy(),
            idx,
            (sel.shape[0], self.channels, *sel.shape[2:]),
            self.codec,
            kind=codec.KIND_ACTIVATION,
            labels=labels,
            step=step,
            client_id=self.client_id,
            tenant=self.tenant_key,
            cut=self.cfg.split_layer,
            key=self.key,
        )
        return buf, sel

    def forward(self, x: np.ndarray, y: np.ndarray) -> bytes:
        """Head + compression; returns the activation message (labels travel with it)."""
        if self._pending is not None:
            raise RuntimeError(f"client {self.client_id}: step {self._pending[0]} still awaits its gradient")
        self.modules.train()
        for g in self.frozen:  # frozen means unchanged: batch norm keeps its running statistics
            self.groups[g].eval()
        self.step += 1
        with self.rng:
            buf, sel = self._encode_out(x, labels=np.asarray(y, dtype=np.int64), step=self.step)
        if self.distilling:  # the teacher's activation at the split travels with the student's
            buf = distill.bundle(buf, self._teacher_message(x, self.step))
        self._pending = (self.step, sel)
        return buf

    @torch.no_grad()
    def _teacher_message(self, x: np.ndarray, step: int) -> bytes:
        t = self.teacher.head(torch.from_numpy(np.require(x, np.float32, ["C", "W"])))
        return codec.encode(t.numpy(), None, tuple(t.shape), self.codec, kind=codec.KIND_ACTIVATION, step=step,
                            client_id=self.client_id, tenant=self.tenant_key, cut=self.cfg.split_layer, key=self.key)

    def backward(self, grad_buf: bytes) -> dict[str, float]:
        """Apply the server's gradient for the sent channels plus the regularisers' own;
        returns each regulariser's unweighted value by name."""
        if self._pending is None:
            raise RuntimeError(f"client {self.client_id}: gradient received with no step pending")
        msg = codec.decode(grad_buf, key=self.grad_key)
        step, sel = self._pending
        if msg.kind != codec.KIND_GRADIENT or msg.step != step or msg.client_id != self.client_id:
            raise ValueError(
                f"client {self.client_id}: expected the gradient of step {step}, got kind {msg.kind} "
                f"for step {msg.step} of client {msg.client_id}"
            )
        if msg.values.shape != tuple(sel.shape):
            raise ValueError(f"gradient shape {msg.values.shape} does not match the activation {tuple(sel.shape)}")
        self._pending = None
        if self.opt is None:
            return {}
        self.opt.zero_grad(set_to_none=True)
        return self._apply_gradient(sel, msg.values, step)

    def _apply_gradient(self, sel: torch.Tensor, grad: np.ndarray, step: int) -> dict[str, float]:
        """Back-propagate ``grad`` (the loss's gradient for ``sel``) and the regularisers'
        terms into the client's parameters, check them, and take one optimizer step;
        returns each regulariser's unweighted value by name."""
        if sel.requires_grad:
            # d(sum(sel * g))/d sel = g exactly, so this is sel.backward(g). The scalar
            # form matters for memory: autograd imports sympy (~20 MiB per process) to
            # check the shape of an explicit gradient tensor.
            (sel * torch.from_numpy(grad)).sum().backward()
        values = {}
        for reg in self.regularizers:
            # totalLoss = Loss + ε·pruneLoss: the term depends only on f, which lives
            # here, so its gradient is added on the client: same sum, f never travels.
            weighted, raw = reg(self.compressor, self.budget)
            if weighted.requires_grad:
                weighted.backward()
            values[reg.name] = raw
        check_finite_grads(self.modules.parameters(), f"client {self.client_id} step {step}")
        self.opt.step()
        return values

    def abort_step(self) -> None:
        """Drop a pending step (its server call failed); the next forward starts fresh."""
        self._pending = None

    @torch.no_grad()
    def predict_message(self, x: np.ndarray) -> bytes:
        """Inference: the activation message for ``x`` at the current budget, eval mode."""
        self.modules.eval()
        buf, _ = self._encode_out(x, labels=None, step=0)
        return buf

    # -- state ----------------------------------------------------------------
    def filter_values(self) -> np.ndarray | None:
        return None if self.compressor is None else self.compressor.filter().detach().numpy().copy()

    def modules_state(self) -> dict[str, np.ndarray]:
        """The trained modules (head + compressor) as numpy: what averaging and saving use."""
        return numpy_state(self.modules)

    def load_modules_state(self, state: dict[str, np.ndarray]) -> None:
        load_numpy_state(self.modules, state)

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: modules, momentum, budget, step, RNG."""
        return {
            "modules": {k: v.detach().clone() for k, v in self.modules.state_dict().items()},
            "optimizer": None if self.opt is None else self.opt.state_dict(),
            "optimizer_kind": None if self.opt is None else optimizer_name(self.opt),
            "budget": self.budget,
            "step": self.step,
            "rng": self.rng.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        if self._pending is not None:
            raise RuntimeError(f"client {self.client_id}: cannot load a state while step {self._pending[0]} is pending")
        self.modules.load_state_dict(state["modules"])
        if self.opt is not None and state["optimizer"] is not None:
            kind = state.get("optimizer_kind", "sgd")
            if optimizer_name(self.opt) != kind:
                self.opt = self._new_optimizer(kind)
            self.opt.load_state_dict(state["optimizer"])
        self.set_budget(int(state["budget"]))
        self.step = int(state["step"])
        self.rng.load_state_dict(state["rng"])
