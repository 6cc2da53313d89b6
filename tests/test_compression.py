import math

import pytest
import torch

from raysplit.compression import Compressor, Decompressor, compressed_size, prune_loss, top_b_indices, total_loss


def make(c=16, r=1, h=8, mask="sigmoid2"):
    torch.manual_seed(0)
    comp = Compressor(c, resolution=r, mask=mask)
    hh, ww = compressed_size((h, h), r)
    dec = Decompressor(c, c, (h, h), resolution=r)
    return comp, dec, (hh, ww)


@pytest.mark.parametrize("r", [1, 2, 3])
@pytest.mark.parametrize("budget", [1, 4, 15, 16])
def test_only_b_channels_leave_and_shape_is_restored(r, budget):
    comp, dec, (hh, ww) = make(r=r)
    x = torch.randn(3, 16, 8, 8)
    sel, idx = comp(x, budget)
    if budget == 16:
        assert idx is None and sel.shape == (3, 16, hh, ww)
        idx = torch.arange(16)
    else:
        assert sel.shape == (3, budget, hh, ww)
        assert len(set(idx.tolist())) == budget
        # the selected channels are the B largest filter entries
        f = comp.filter().detach()
        assert set(idx.tolist()) == set(torch.topk(f, budget).indices.tolist())
    out = dec(sel, idx)
    assert out.shape == (3, 16, 8, 8)


def test_resolution_conv_geometry_matches_the_paper():
    comp = Compressor(8, resolution=2)
    assert comp.conv.kernel_size == (4, 4) and comp.conv.stride == (2, 2) and comp.conv.padding == (2, 2)
    comp1 = Compressor(8, resolution=1)
    assert comp1.conv.kernel_size == (3, 3) and comp1.conv.stride == (1, 1) and comp1.conv.padding == (1, 1)
    with pytest.raises(ValueError, match="resolution factor r must be an integer >= 1, got 0"):
        Compressor(8, resolution=0)


def test_scatter_puts_channels_back_at_their_indices():
    _, dec, _ = make(c=6)
    vals = torch.arange(2 * 2 * 1 * 1, dtype=torch.float32).view(2, 2, 1, 1)
    dense = dec.scatter(vals, torch.tensor([4, 1]))
    assert dense.shape == (2, 6, 1, 1)
    assert dense[:, 4].flatten().tolist() == [0.0, 2.0]
    assert dense[:, 1].flatten().tolist() == [1.0, 3.0]
    assert dense[:, [0, 2, 3, 5]].abs().sum() == 0


def test_gradients_reach_filter_and_head():
    torch.manual_seed(0)
    head = torch.nn.Conv2d(3, 16, 3, padding=1)
    comp, dec, _ = make()
    x = torch.randn(4, 3, 8, 8)
    sel, idx = comp(head(x), 4)
    out = dec(sel, idx)
    loss = out.square().mean() + prune_loss(comp.filter(), 4)
    loss.backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert comp.f_hat.grad is not None and (comp.f_hat.grad != 0).all()


def test_task_gradient_reaches_only_selected_filter_entries():
    comp, dec, _ = make()
    x = torch.randn(4, 16, 8, 8)
    sel, idx = comp(x, 4)
    dec(sel, idx).sum().backward()
    g = comp.f_hat.grad
    mask = torch.zeros(16, dtype=torch.bool)
    mask[idx] = True
    assert (g[~mask] == 0).all()
    assert (g[mask] != 0).any()


def test_prune_loss_matches_the_formula():
    f = torch.tensor([0.5, 0.25, 1.0, 0.75])  # sum 2.5
    for budget, delta, lam in [(4, 0.1, 1.0), (1, 0.5, 0.3), (2.5, 0.1, 0.0)]:
        gap = 2.5 - budget
        want = math.exp(delta * gap) + lam * math.exp(-delta * gap)
        assert prune_loss(f, budget, delta, lam).item() == pytest.approx(want, rel=1e-6)
    assert total_loss(torch.tensor(2.0), torch.tensor(3.0), 1000.0).item() == 3002.0
    with pytest.raises(ValueError, match="lambda"):
        prune_loss(f, 1, lam=1.5)


def test_masks():
    comp = Compressor(4, mask="sigmoid")
    comp2 = Compressor(4, mask="sigmoid2")
    with torch.no_grad():
        comp.f_hat.copy_(torch.tensor([0.0, 1.0, -1.0, 2.0]))
        comp2.f_hat.copy_(comp.f_hat)
    s = torch.sigmoid(comp.f_hat)
    torch.testing.assert_close(comp.filter(), s)
    torch.testing.assert_close(comp2.filter(), s * s)
    # authors' initialisation: 15·U(0,1)
    big = Compressor(10000)
    assert 0 <= big.f_hat.min() and big.f_hat.max() <= 15 and abs(big.f_hat.mean().item() - 7.5) < 0.3


def test_budget_change_takes_effect_on_next_call_without_rebuild():
    comp, dec, _ = make()
    x = torch.randn(2, 16, 8, 8)
    assert comp(x, 4)[0].shape[1] == 4
    assert comp(x, 9)[0].shape[1] == 9
    assert comp(x, 2)[0].shape[1] == 2


def test_top_b_order_and_errors():
    f = torch.tensor([0.1, 0.9, 0.5, 0.9])
    assert top_b_indices(f, 3).tolist() == [1, 3, 2]  # largest first, ties to lower index
    with pytest.raises(ValueError, match="budget 5 out of range: allowed 1..4"):
        top_b_indices(f, 5)


def test_reset_filter_prune_and_deprune():
    comp, _, _ = make()
    with torch.no_grad():
        comp.f_hat.copy_(torch.linspace(-10, 10, 16))
    before = comp.f_hat.detach().clone()
    top = set(top_b_indices(comp.filter(), 4).tolist())
    g = torch.Generator().manual_seed(0)
    assert comp.reset_filter("prune", 4, generator=g) == 4
    changed = {i for i in range(16) if comp.f_hat[i] != before[i]}
    assert changed == top
    with torch.no_grad():
        comp.f_hat.copy_(before)
    assert comp.reset_filter("deprune", 4, generator=g) == 12
    changed = {i for i in range(16) if comp.f_hat[i] != before[i]}
    assert changed == set(range(16)) - top
    with pytest.raises(ValueError, match="unknown reset"):
        comp.reset_filter("sideways", 4)


def test_any_channel_count():
    for c in (1, 3, 37, 300):
        comp = Compressor(c)
        dec = Decompressor(c, c, (5, 5))
        sel, idx = comp(torch.randn(2, c, 5, 5), max(1, c // 3))
        assert dec(sel, idx if idx is not None else torch.arange(c)).shape == (2, c, 5, 5)
