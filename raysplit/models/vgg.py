"""VGG with batch norm, as a flat list of split points.

Each entry of a VGG configuration is one *layer* in the paper's sense: an int is
conv3x3 + BN + ReLU with that many output channels, "M" is a 2x2 max-pool. Splitting
after layer n therefore means "after the first n entries": n=4 on VGG11 is after
[64, M, 128, M], 128 channels at 8x8 for a 32x32 input, the paper's setting.
"""

from __future__ import annotations

from torch import nn

# The paper's model (Simonyan & Zisserman config "A" with batch norm).
VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
# CPU-sized: the same head up to the default split (so budgets such as 4 of 128 mean the
# same thing), a much thinner tail. About 3.5x the throughput of VGG11 on 2 cores.
VGG_SMALL = (64, "M", 128, "M", 128, "M", 256, "M")


def vgg_layers(cfg: tuple, in_channels: int, num_classes: int) -> list[nn.Module]:
    """Return the VGG as a list of layers; the last entry is the classifier."""
    layers: list[nn.Module] = []
    c = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers.append(
                nn.Sequential(
                    nn.Conv2d(c, int(v), kernel_size=3, padding=1),
                    nn.BatchNorm2d(int(v)),
                    nn.ReLU(inplace=True),
                )
            )
            c = int(v)
    # CIFAR-style classifier. Adaptive pooling makes any input size work; on 32x32
    # inputs VGG11's last map is already 1x1, so this is exactly the CIFAR classifier.
    layers.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)))
    return layers
