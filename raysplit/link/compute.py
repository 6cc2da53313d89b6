"""How long an emulated device computes: measured, scaled by its CPU cap, or modelled.

The simulated clock needs each step's client compute and server work. Three sources
(``LinkConfig.sim_compute``):

* ``measured``: the wall time the step's compute really took here, under the real CPU
  cap (cgroup or throttle; the throttle's sleep counted). Realistic, not reproducible.
* ``scaled``: the wall time measured without a real cap, divided by the device's CPU
  cap (40 % of a core computes 2.5x longer). Nothing sleeps; not reproducible either
  (measured times vary from run to run).
* ``model``: FLOPs / speed: the network's multiply-accumulates are counted once
  (:func:`split_flops`; convolutions and linear layers, 2 FLOPs per MAC, training = 3x
  the forward pass), the client's time is its FLOPs / (``device_gflops`` x its CPU cap)
  and the server's is its FLOPs / ``server_gflops``. A pure function of the
  configuration, so a virtual run is deterministic for a seed: this is the default.

Measured server work is the merged step's compute divided by the micro-batches it
merged (each client's share), and the shard's processor is shared in simulated time.
"""

from __future__ import annotations

from dataclasses import dataclass

SIM_COMPUTE = ("model", "scaled", "measured")
TRAIN_FACTOR = 3.0  # backward ~ 2x forward


@dataclass(frozen=True)
class SplitFlops:
    """Training FLOPs per sample: the client's part (head + compressor) and the server's
    (decompressor + tail)."""

    client: float
    server: float


def split_flops(split) -> SplitFlops:
    """Count the MACs of one sample through both halves of ``split`` (a SplitConfig with
    its input shape filled in)."""
    import torch
    from torch import nn

    from raysplit.training.network import build_network

    net = build_network(split.replace(torch_threads=None))
    macs = [0.0]

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
            macs[0] += out.numel() * k
        elif isinstance(mod, nn.ConvTranspose2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.out_channels // mod.groups)
            macs[0] += inp[0].numel() * k
        elif isinstance(mod, nn.Linear):
            macs[0] += out.numel() * mod.in_features

    def count(modules, x):
        handles = [m.register_forward_hook(hook) for mod in modules for m in mod.modules()
                   if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
        macs[0] = 0.0
        try:
            with torch.no_grad():
                for mod in modules:
                    x = mod(x)
        finally:
            for h in handles:
                h.remove()
        return macs[0], x

    x = torch.zeros((1, *split.input_shape))
    net.head.eval()
    head_macs, l_n = count([net.head], x)
    client_macs = head_macs
    if net.compressor is not None:
        conv_macs, comp = count([net.compressor.conv], l_n)
        client_macs += conv_macs
        server_macs, _ = count([net.decompressor.deconv], comp)
    else:
        server_macs = 0.0
    net.tail.eval()
    tail_macs, _ = count([net.tail], l_n)
    f = 2.0 * TRAIN_FACTOR
    return SplitFlops(client=f * client_macs, server=f * (server_macs + tail_macs))


@dataclass(frozen=True)
class ComputeModel:
    """Turns a step's measured times into simulated compute seconds.

    Args:
        mode: model | scaled | measured.
        cpu: the device's CPU cap (fraction of a core; None = one core).
        flops: training FLOPs per sample (model mode).
        device_gflops: one full core's speed of the emulated device, GFLOP/s.
        server_gflops: a shard's speed, GFLOP/s.
    """

    mode: str = "model"
    cpu: float | None = None
    flops: SplitFlops | None = None
    device_gflops: float = 20.0
    server_gflops: float = 200.0

    def __post_init__(self) -> None:
        if self.mode not in SIM_COMPUTE:
            raise ValueError(f"unknown sim_compute {self.mode!r}; choose one of {', '.join(SIM_COMPUTE)}")
        if self.mode == "model" and self.flops is None:
            raise ValueError("sim_compute 'model' needs the network's FLOPs")
        if not (self.device_gflops > 0 and self.server_gflops > 0):
            raise ValueError(f"device and server speeds must be > 0 GFLOP/s, got {self.device_gflops}, "
                             f"{self.server_gflops}")

    @property
    def share(self) -> float:
        return 1.0 if self.cpu is None else float(self.cpu)

    def client(self, samples: int, measured_s: float, forward: bool) -> float:
        """Seconds of the client's forward (``forward``) or backward part of a step."""
        if self.mode == "model":
            part = 1.0 / TRAIN_FACTOR if forward else 1.0 - 1.0 / TRAIN_FACTOR
            return part * samples * self.flops.client / (self.device_gflops * 1e9 * self.share)
        if self.mode == "scaled":
            return measured_s / self.share
        return measured_s

    def server(self, samples: int, measured_s: float, merged: int) -> float:
        """Seconds of server work for one client's micro-batch (unshared processor)."""
        if self.mode == "model":
            return samples * self.flops.server / (self.server_gflops * 1e9)
        return measured_s / max(merged, 1)
