"""raysplit's Adam is torch.optim.Adam's update, bit for bit, without importing torch._dynamo."""

import subprocess
import sys

import pytest
import torch

from raysplit.training.adam import Adam
from raysplit.training.optimizers import make_optimizer, optimizer_name


from test_sgd import _groups, _model  # the same small network and parameter groups


def _run(model, opt, steps, seed, lr_change_at=None):
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        x = torch.randn(8, 3, 6, 6, generator=g)
        y = torch.randint(0, 5, (8,), generator=g)
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if step == lr_change_at:  # a learning-rate change mid-run, as a stage's decay makes
            for grp in opt.param_groups:
                grp["lr"] = grp["lr"] * 0.1


@pytest.mark.parametrize("opts", [{}, {"amsgrad": True}, {"betas": (0.8, 0.99), "eps": 1e-6}])
def test_same_parameters_as_torch_adam(opts):
    ours, ref = _model(0), _model(0)
    _run(ours, Adam(_groups(ours, 1e-2), lr=1e-2, **opts), 6, 1, lr_change_at=3)
    _run(ref, torch.optim.Adam(_groups(ref, 1e-2), lr=1e-2, **opts), 6, 1, lr_change_at=3)
    for a, b in zip(ours.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)


def test_state_dict_round_trip_and_torch_layout():
    """Save mid-run, load into a fresh optimizer, continue: bit-identical to not stopping;
    torch.optim.Adam reads our state and we read its."""
    ours = _model(0)
    opt = Adam(ours.parameters(), lr=1e-2)
    _run(ours, opt, 3, 1)
    saved, params = opt.state_dict(), {k: v.clone() for k, v in ours.state_dict().items()}
    assert set(saved["state"][0]) == {"step", "exp_avg", "exp_avg_sq"} and float(saved["state"][0]["step"]) == 3
    _run(ours, opt, 3, 2)

    again = _model(0)
    again.load_state_dict(params)
    opt2 = Adam(again.parameters(), lr=0.5)  # lr comes back from the state
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["lr"] == 1e-2
    _run(again, opt2, 3, 2)
    for a, b in zip(ours.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)

    ref = _model(0)
    ref.load_state_dict(params)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    ref_opt.load_state_dict(saved)
    _run(ref, ref_opt, 3, 2)
    for a, b in zip(ours.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)
    opt2.load_state_dict(ref_opt.state_dict())
    assert float(opt2.state[next(again.parameters())]["step"]) == 6


def test_refuses_a_state_that_does_not_fit_and_names_bad_options():
    one = Adam([torch.nn.Parameter(torch.zeros(2))])
    other = Adam([torch.nn.Parameter(torch.zeros(3))])
    one.param_groups[0]["params"][0].grad = torch.ones(2)
    one.step()
    with pytest.raises(ValueError, match=r"exp_avg 0 has shape \(2,\), the parameter \(3,\)"):
        other.load_state_dict(one.state_dict())
    for kwargs, match in (({"lr": -1}, "Adam lr=-1"), ({"betas": (0.9, 1.0)}, r"betas\[1\]=1.0"),
                          ({"betas": (0.9,)}, "two numbers"), ({"eps": float("nan")}, "eps=nan")):
        with pytest.raises(ValueError, match=match):
            Adam([torch.nn.Parameter(torch.zeros(1))], **kwargs)


def test_make_optimizer_by_name():
    p = torch.nn.Parameter(torch.zeros(2))
    sgd = make_optimizer("sgd", [{"params": [p], "weight_decay": 5e-4}], lr=0.1, momentum=0.9, weight_decay=5e-4)
    adam = make_optimizer("adam", [{"params": [p], "weight_decay": 5e-4}], lr=1e-3, momentum=0.9, weight_decay=5e-4)
    assert optimizer_name(sgd) == "sgd" and sgd.param_groups[0]["momentum"] == 0.9
    assert optimizer_name(adam) == "adam" and adam.param_groups[0]["weight_decay"] == 0.0  # the recipe's Adam
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; allowed: sgd, adam"):
        make_optimizer("rmsprop", [{"params": [p]}], lr=1, momentum=0, weight_decay=0)


def test_adam_does_not_import_dynamo_or_sympy():
    code = """
import sys, torch
from raysplit.training.adam import Adam
m = torch.nn.Linear(4, 2)
opt = Adam(m.parameters(), lr=1e-3, amsgrad=True)
for _ in range(2):
    opt.zero_grad(); m(torch.randn(3, 4)).sum().backward(); opt.step()
opt.state_dict()
print(sorted(x for x in sys.modules if x.startswith(("torch._dynamo", "sympy")))[:3])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
