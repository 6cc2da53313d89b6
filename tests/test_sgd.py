"""raysplit's SGD is torch.optim.SGD's update, bit for bit, without importing torch._dynamo."""

import subprocess
import sys

import pytest
import torch

from raysplit.training.sgd import SGD


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(64, 5))


def _groups(m: torch.nn.Module, wd: float) -> list[dict]:
    ps = list(m.parameters())
    return [{"params": ps[:-1], "weight_decay": wd}, {"params": ps[-1:], "weight_decay": 0.0}]


@pytest.mark.parametrize(
    "opts",
    [
        {"momentum": 0.9},
        {"momentum": 0.0},
        {"momentum": 0.9, "dampening": 0.1},
        {"momentum": 0.9, "nesterov": True},
    ],
)
def test_same_parameters_as_torch_sgd(opts):
    ours, ref = _model(0), _model(0)
    opt = SGD(_groups(ours, 5e-4), lr=0.05, **opts)
    ref_opt = torch.optim.SGD(_groups(ref, 5e-4), lr=0.05, **opts)
    g = torch.Generator().manual_seed(1)
    for step in range(6):
        x = torch.randn(8, 3, 6, 6, generator=g)
        y = torch.randint(0, 5, (8,), generator=g)
        for m, o in ((ours, opt), (ref, ref_opt)):
            o.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(m(x), y).backward()
            o.step()
        if step == 3:  # a learning-rate change mid-run, as the schedule makes
            for o in (opt, ref_opt):
                for grp in o.param_groups:
                    grp["lr"] = 0.01
    for a, b in zip(ours.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)


def _run(model, opt, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 3, 6, 6, generator=g)
        y = torch.randint(0, 5, (8,), generator=g)
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def test_state_dict_round_trip_and_torch_layout():
    """Save mid-run, load into a fresh optimizer, continue: bit-identical to not stopping.
    The state is torch.optim.SGD's own layout, so either can read the other's."""
    ours = _model(0)
    opt = SGD(_groups(ours, 5e-4), lr=0.05, momentum=0.9)
    _run(ours, opt, 3, 1)
    saved, params = opt.state_dict(), {k: v.clone() for k, v in ours.state_dict().items()}
    _run(ours, opt, 3, 2)

    again = _model(0)
    again.load_state_dict(params)
    opt2 = SGD(_groups(again, 5e-4), lr=0.9, momentum=0.9)  # lr comes back from the state
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["lr"] == 0.05
    _run(again, opt2, 3, 2)
    for a, b in zip(ours.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)

    ref = _model(0)
    ref.load_state_dict(params)
    ref_opt = torch.optim.SGD(_groups(ref, 5e-4), lr=0.05, momentum=0.9)
    ref_opt.load_state_dict(saved)  # torch reads our state
    _run(ref, ref_opt, 3, 2)
    for a, b in zip(ours.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)
    theirs = ref_opt.state_dict()
    opt2.load_state_dict(theirs)  # and we read torch's
    assert set(opt2.state_dict()["state"]) == set(theirs["state"])


def test_load_state_dict_refuses_a_state_that_does_not_fit():
    opt = SGD(_groups(_model(0), 0.0), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="parameter groups"):
        opt.load_state_dict({"state": {}, "param_groups": [{"params": [0]}]})
    one = SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    two = SGD([torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match="holds 1 parameters in the state, 2 here"):
        two.load_state_dict(one.state_dict())


def test_parameters_without_gradient_are_left_alone():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = SGD([a, b], lr=0.5, momentum=0.9)
    a.grad = torch.ones(3)
    opt.step()
    assert torch.equal(b, torch.ones(3)) and torch.allclose(a, torch.full((3,), 0.5))
    assert b not in opt.state
    opt.zero_grad()
    assert a.grad is None


def test_zero_grad_in_place():
    a = torch.nn.Parameter(torch.ones(2))
    opt = SGD([a], lr=0.1)
    a.grad = torch.ones(2)
    opt.zero_grad(set_to_none=False)
    assert torch.equal(a.grad, torch.zeros(2))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lr": -0.1}, "lr=-0.1"),
        ({"lr": float("nan")}, "lr=nan"),
        ({"lr": 0.1, "momentum": -1}, "momentum=-1"),
        ({"lr": 0.1, "weight_decay": "x"}, "weight_decay='x'"),
        ({"lr": 0.1, "nesterov": True}, "nesterov needs momentum > 0"),
    ],
)
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SGD([torch.nn.Parameter(torch.zeros(1))], **kwargs)


def test_bad_params():
    p = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match="empty"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match="more than one"):
        SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="leaf"):
        SGD([p * 2], lr=0.1)


def test_split_client_and_server_do_not_import_dynamo_or_sympy():
    """The reason this module exists: building and stepping a client and a shard in a
    fresh process must not load torch._dynamo nor sympy (which autograd imports for an
    explicit gradient tensor): ~50 MiB per actor process together."""
    code = """
import sys, numpy as np
from raysplit.config import SplitConfig
from raysplit.training.client import SplitClient
from raysplit.training.server import SplitServer
cfg = SplitConfig(model="vgg_small")
c, s = SplitClient(cfg), SplitServer(cfg)
x = np.random.rand(4, 1, 32, 32).astype("float32")
for _ in range(2):  # the second step uses the momentum buffers
    (r,) = s.train_step([c.forward(x, np.arange(4))], 0.01)
    c.backward(r.grad)
c.state_dict(); s.state_dict()
print(sorted(m for m in sys.modules if m.startswith(("torch._dynamo", "sympy")))[:3])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
