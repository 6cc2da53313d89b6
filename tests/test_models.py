import pytest
import torch

from raysplit.models import MODELS, cut_model, get_model


def split_model(name, n, shape, classes, seed=None):
    return cut_model(name, n, shape, classes, seed=seed)


def test_vgg11_default_split_is_the_papers():
    sm = split_model("vgg11", 4, (3, 32, 32), 10, seed=0)
    assert sm.shapes[0] == (128, 8, 8)
    x = torch.randn(2, 3, 32, 32)
    assert sm.tail(sm.head(x)).shape == (2, 10)


def test_vgg_small_keeps_128_channels_at_the_split():
    sm = split_model("vgg_small", 4, (1, 32, 32), 10, seed=0)
    assert sm.shapes[0] == (128, 8, 8)
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
            assert sm.head(x).shape[1:] == sm.shapes[0]


def test_split_zero_is_raw_input_offload():
    sm = split_model("vgg_small", 0, (1, 32, 32), 10)
    assert len(sm.head) == 0 and sm.shapes[0] == (1, 32, 32)


def test_three_pieces_compose_head_middle_tail():
    x = torch.randn(2, 1, 32, 32)
    whole = cut_model("vgg_small", 0, (1, 32, 32), 10, seed=3)
    three = cut_model("vgg_small", (2, 5), (1, 32, 32), 10, seed=3)
    for p in (*whole.pieces, *three.pieces):
        p.eval()
    assert len(three.pieces) == 3 and three.points == (2, 5) and len(three.shapes) == 2
    out = three.pieces[2](three.pieces[1](three.pieces[0](x)))
    torch.testing.assert_close(out, whole.tail(x))
    with pytest.raises(ValueError, match="strictly ascending"):
        cut_model("vgg_small", (5, 2), (1, 32, 32), 10)


@pytest.mark.parametrize("name", MODELS)
def test_min_input_size_is_the_smallest_that_works(name):
    need = get_model(name).min_input_size
    cut_model(name, 1, (1, need, need), 10)
    if need > 1:
        with pytest.raises(ValueError, match=f"needs images of at least {need}x{need} px"):
            cut_model(name, 1, (1, need - 1, need - 1), 10)


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
