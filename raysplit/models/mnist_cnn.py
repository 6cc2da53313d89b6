"""The MNIST CNN of Krouka et al., "Energy-Efficient Model Compression and Splitting for
Collaborative Inference Over Time-Varying Channels" (§IV), as a flat list of split points.

Four 5x5 convolutions with 16, 32, 48 and 64 channels, each followed by ReLU and a
stride-2 pool, then fully connected layers of 512, 256, 128, 64 and 10 neurons (ReLU on
all but the last, whose softmax is the loss). Every conv+ReLU, every pool and every fc
layer is one *layer* in the paper's sense, i.e. one representation the client may send:

    1 conv1  2 pool1  3 conv2  4 pool2  5 conv3  6 pool3  7 conv4  8 pool4
    9 fc1   10 fc2   11 fc3   12 fc4   13 fc5 (the 10 class scores)

so the cut after layer 2 is the paper's "pool-1" baseline and the cut after layer 13 its
"softmax" baseline (cut 0 sends the raw image).

What the paper leaves open, decided here: convolutions keep the size (padding 2, like
Keras' ``padding="same"``) and pools round up (``ceil_mode``, like ``"same"`` pooling), so
a 28x28 image goes 28 -> 14 -> 7 -> 4 -> 2 and fc1 sees 64x2x2 = 256 features. That gives
433,274 parameters of which fc1 and fc2 hold 60.7 %, matching the paper's "around 60 %"
(valid convolutions cannot take 28 px through four 5x5 layers; 1x1 at pool 4 would give
fc1+fc2 49 %). An adaptive max-pool to 2x2 in front of fc1 is the identity on 17-32 px
inputs (so on MNIST's 28 px and its 32 px padded form) and lets other sizes through.
"""

from __future__ import annotations

from torch import nn

CONV_CHANNELS = (16, 32, 48, 64)
FC_SIZES = (512, 256, 128, 64)
KERNEL = 5
POOLED = 2  # side of the last pooled map (28 -> 14 -> 7 -> 4 -> 2)


def mnist_cnn_layers(in_channels: int, num_classes: int) -> list[nn.Module]:
    """The 13 layers; the last is the classifier (raw scores, softmax in the loss)."""
    layers: list[nn.Module] = []
    c = in_channels
    for out in CONV_CHANNELS:
        layers.append(nn.Sequential(nn.Conv2d(c, out, KERNEL, padding=KERNEL // 2), nn.ReLU()))
        layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
        c = out
    width = c * POOLED * POOLED
    for i, n in enumerate(FC_SIZES):
        fc = nn.Sequential(nn.Linear(width, n), nn.ReLU())
        if i == 0:
            fc = nn.Sequential(nn.AdaptiveMaxPool2d(POOLED), nn.Flatten(), *fc)
        layers.append(fc)
        width = n
    layers.append(nn.Linear(width, num_classes))
    return layers

