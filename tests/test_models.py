import pytest
import torch

from raysplit.models import MODELS, split_model


def test_vgg11_default_split_is_the_papers():
    sm = split_model("vgg11", 4, (3, 32, 32), 10, seed=0)
    assert sm.split_shape == (128, 8, 8)
    x = torch.randn(2, 3, 32, 32)
    assert sm.tail(sm.head(x)).shape == (2, 10)


def test_vgg_small_keeps_128_channels_at_the_split():
    sm = split_model("vgg_small", 4, (1, 32, 32), 10, seed=0)
    assert sm.split_shape == (128, 8, 8)
    big = sum(p.numel() for p in split_model("vgg11", 4, (1, 32, 32), 10).tail.parameters())
    small = sum(p.numel() for p in sm.tail.parameters())
    assert small < big / 5


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape,classes", [((1, 32, 32), 10), ((3, 64, 64), 7)])
def test_every_split_point_composes_to_the_whole(name, shape, classes):
    torch.manual_seed(0)
    whole = split_model(name, 0, shape, classes, seed=1)
    n_layers = len(whole.tail)
    x = torch.randn(2, *shape)
    whole.tail.eval()
    ref = whole.tail(x)
    for n in (0, 1, n_layers // 2, n_layers - 1):
        sm = split_model(name, n, shape, classes, seed=1)
        sm.head.eval()
        sm.tail.eval()
        out = sm.tail(sm.head(x))
        assert out.shape == (2, classes)
        torch.testing.assert_close(out, ref)  # same seed, same weights, same function
        if n > 0:
            assert sm.head(x).shape[1:] == sm.split_shape


def test_split_zero_is_raw_input_offload():
    sm = split_model("vgg_small", 0, (1, 32, 32), 10)
    assert len(sm.head) == 0 and sm.split_shape == (1, 32, 32)


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="unknown model 'vgg99'"):
        split_model("vgg99", 1, (1, 32, 32), 10)
    with pytest.raises(ValueError, match="split_layer 99 out of range"):
        split_model("vgg11", 99, (1, 32, 32), 10)


def test_same_seed_same_halves():
    a = split_model("resnet18", 3, (3, 32, 32), 10, seed=5)
    b = split_model("resnet18", 3, (3, 32, 32), 10, seed=5)
    for p, q in zip(a.tail.parameters(), b.tail.parameters()):
        assert torch.equal(p, q)
