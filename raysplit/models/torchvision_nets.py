"""torchvision ResNet-18 and MobileNetV2 as lists of block-boundary layers.

torchvision is imported only when one of these is built: it costs ~90 MB per process,
and a client actor running a VGG never needs it.
"""

from __future__ import annotations

from torch import nn


def resnet18_layers(in_channels: int, num_classes: int) -> list[nn.Module]:
    """Stem, the eight BasicBlocks, classifier: split points are block boundaries.

    For small inputs (<= 64 px) a CIFAR-style stem (3x3 conv, no max-pool) is used, as is
    common for CIFAR; larger inputs keep torchvision's 7x7/2 stem with max-pool.
    """
    from torchvision import models as tvm

    net = tvm.resnet18(weights=None, num_classes=num_classes)
    stem = nn.Sequential(
        nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False),
        net.bn1,
        net.relu,
    )
    blocks = [b for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for b in layer]
    head = nn.Sequential(net.avgpool, nn.Flatten(), net.fc)
    return [stem, *blocks, head]


def resnet18_imagenet_layers(in_channels: int, num_classes: int) -> list[nn.Module]:
    from torchvision import models as tvm

    net = tvm.resnet18(weights=None, num_classes=num_classes)
    conv1 = net.conv1 if in_channels == 3 else nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    stem = nn.Sequential(conv1, net.bn1, net.relu, net.maxpool)
    blocks = [b for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for b in layer]
    return [stem, *blocks, nn.Sequential(net.avgpool, nn.Flatten(), net.fc)]


def mobilenet_v2_layers(in_channels: int, num_classes: int) -> list[nn.Module]:
    """The 19 feature blocks (stem conv, 17 inverted residuals, last 1x1 conv), classifier."""
    from torchvision import models as tvm

    net = tvm.mobilenet_v2(weights=None, num_classes=num_classes)
    feats = list(net.features)
    if in_channels != 3:
        first = feats[0]
        conv = first[0]
        first[0] = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), net.classifier)
    return [*feats, head]
