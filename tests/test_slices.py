"""NAIR's math (compression/slices.py) on known inputs, and the slice fine-tuning loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from raysplit.compression.slices import (
    SliceOrder,
    filter_importance,
    importance_weights,
    natural_order,
    padded_variants,
    penalty,
    progressive_weights,
    rank_channels,
    slice_loss,
    slice_masks,
    split_layer_filter,
)
from raysplit.models.cuts import cut_model


def _conv(weights_per_channel):
    conv = nn.Conv2d(2, len(weights_per_channel), 1, bias=False)
    with torch.no_grad():
        for c, v in enumerate(weights_per_channel):
            conv.weight[c] = torch.tensor(v, dtype=torch.float32).reshape(2, 1, 1)
    return conv


def test_eq8_filter_importance_is_the_l1_norm_of_each_filter():
    conv = _conv([[1.0, -2.0], [0.5, 0.5], [-5.0, 0.0]])
    np.testing.assert_allclose(filter_importance(conv).detach().numpy(), [3.0, 1.0, 5.0])
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, -2.0, 0.5]))
        bn.running_var.copy_(torch.tensor([1.0, 3.0, 0.0]))
    want = np.array([3.0, 1.0, 5.0]) * np.array([1.0, 2.0, 0.5]) / np.sqrt(np.array([1.0, 3.0, 0.0]) + bn.eps)
    np.testing.assert_allclose(filter_importance(conv, bn).detach().numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(filter_importance(conv, bn, fold_bn=False).detach().numpy(), [3.0, 1.0, 5.0])
    r = filter_importance(conv, bn)
    r.sum().backward()  # differentiable: reaches the kernel and gamma
    assert conv.weight.grad is not None and bn.weight.grad is not None


def test_ranking_and_slice_order():
    order = rank_channels(np.array([3.0, 1.0, 5.0, 1.0, 4.0]), 2)
    assert order.order == (2, 4, 0, 1, 3)  # descending, ties to the lower index
    assert order.counts == (3, 2)  # the first C % J slices one channel larger
    assert order.prefix(1).tolist() == [2, 4, 0] and order.prefix(2).tolist() == [2, 4, 0, 1, 3]
    assert order.prefix(0).tolist() == []
    np.testing.assert_allclose(order.slice_importance(), [12.0, 2.0])
    assert rank_channels(np.arange(10.0), 4).counts == (3, 3, 2, 2)
    assert SliceOrder.from_dict(order.to_dict()) == order
    assert natural_order(5, 5).order == (0, 1, 2, 3, 4) and natural_order(5, 5).counts == (1,) * 5
    with pytest.raises(ValueError, match="slices 6 out of range; allowed: 1..5"):
        rank_channels(np.ones(5), 6)
    with pytest.raises(ValueError, match="permutation"):
        SliceOrder((0, 0, 1), (3,))
    with pytest.raises(ValueError, match="sum to the 3 channels"):
        SliceOrder((0, 1, 2), (1, 1))
    masks = slice_masks(order)
    assert masks.shape == (2, 5)
    assert masks[0].tolist() == [True, False, True, False, True] and masks[1].all()


def test_eq11_importance_weights_on_known_values():
    # slice importance 4, 3, 2, 1: R^v = 4, 7, 9, 10 -> (1 - 0.4)^2, (1 - 0.7)^2, (1 - 0.9)^2, then 1
    np.testing.assert_allclose(importance_weights(np.array([4.0, 3.0, 2.0, 1.0])), [0.36, 0.09, 0.01, 1.0])
    np.testing.assert_allclose(importance_weights(np.array([4.0, 3.0, 2.0, 1.0]), w_non=1), [0.6, 0.3, 0.1, 1.0])
    np.testing.assert_allclose(importance_weights(np.array([7.0])), [1.0])  # one slice: the whole activation
    w = importance_weights(np.array([5.0, 2.0, 2.0, 1.0]))
    assert w[-1] == 1.0 and np.all(np.diff(w[:-1]) < 0)  # decreasing, the whole representation highest
    with pytest.raises(ValueError, match="finite values >= 0"):
        importance_weights(np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="w_non"):
        importance_weights(np.array([1.0]), w_non=-1)
    np.testing.assert_allclose(progressive_weights(4), [1.0, 0.75, 0.5, 0.25])


def test_eq12_penalty_is_the_importance_outside_the_first_slice():
    r = torch.tensor([3.0, 1.0, 5.0, 1.0, 4.0], requires_grad=True)
    order = rank_channels(r.detach().numpy(), 2)  # first slice: channels 2, 4, 0
    p = penalty(r, order)
    assert float(p.detach()) == pytest.approx(2.0)  # R_1 + R_3
    p.backward()
    assert r.grad.tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert float(penalty(r, rank_channels(r.detach().numpy(), 5)).detach()) == pytest.approx(14.0 - 5.0)


def test_padded_variants_and_slice_loss():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 2, 2)
    order = SliceOrder((2, 0, 3, 1), (1, 2, 1))
    masks = torch.from_numpy(slice_masks(order))
    v = padded_variants(x, masks)
    assert v.shape == (9, 4, 2, 2)
    np.testing.assert_array_equal(v[:3, 2].numpy(), x[:, 2].numpy())
    assert not v[:3, [0, 1, 3]].any() and not v[3:6, 1].any()
    np.testing.assert_array_equal(v[3:6, [2, 0, 3]].numpy(), x[:, [2, 0, 3]].numpy())
    np.testing.assert_array_equal(v[6:].numpy(), x.numpy())
    tail = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    y = torch.tensor([0, 4, 2])
    w = torch.tensor([0.5, 0.25, 1.0])
    total, per = slice_loss(tail, x, y, masks, w)
    want = [nn.functional.cross_entropy(tail(x * m.reshape(1, 4, 1, 1)), y) for m in masks.float()]
    np.testing.assert_allclose(per.numpy(), [float(t.detach()) for t in want], rtol=1e-5)
    assert float(total.detach()) == pytest.approx(sum(float(a) * float(b.detach()) for a, b in zip(w, want)), rel=1e-5)


@pytest.mark.parametrize("model, split, channels", [("vgg_small", 4, 128), ("mobilenet_v2", 4, 24)])
def test_split_layer_filter_finds_the_layer_that_makes_the_split(model, split, channels):
    cm = cut_model(model, split, (3, 32, 32), 10, seed=0)
    conv, bn = split_layer_filter(cm.head, channels)
    assert conv.out_channels == channels and bn is not None and bn.num_features == channels
    convs = [m for m in cm.head.modules() if isinstance(m, nn.Conv2d) and m.out_channels == channels and m.groups == 1]
    assert conv is convs[-1]
    with pytest.raises(ValueError, match="no convolution with 7 output channels"):
        split_layer_filter(cm.head, 7)

