"""BottleFit in raysplit: the student, the distillation losses on known inputs, the stages
(what each one freezes and trains), the teacher's wire bundle, and the plan of the methods."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raysplit import codec, local
from raysplit.config import SplitConfig, TrainConfig
from raysplit.inference import load_model
from raysplit.models.bottleneck import build_student, load_teacher
from raysplit.training import distill
from raysplit.training.client import SplitClient
from raysplit.training.methods import get_method, make_plan
from raysplit.training.objectives import Outputs, distill_loss, ghnd, kd
from raysplit.training.optimizers import optimizer_name
from raysplit.training.server import SplitServer

SHAPE = (1, 16, 16)  # digits at 16 px: vgg_small's split (layer 4) is 128 x 4 x 4
COMMON = ["--dataset", "digits", "--image-size", "16", "--batch-size", "32", "--max-batches", "4",
          "--test-subset", "64", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A 'none' run's model file: the trained model without compression."""
    out = tmp_path_factory.mktemp("teacher")
    local.main(COMMON + ["--method", "none", "--epochs-per-budget", "1", "--save-model", "--out", str(out)])
    return out / "models" / "budget_128.pt"


def student_cfg(teacher=None, **kw) -> SplitConfig:
    return SplitConfig(model="vgg_small", input_shape=SHAPE, num_classes=10, use_module=False, bottleneck=3,
                       teacher=None if teacher is None else str(teacher), torch_threads=1, **kw)


# -- losses on known inputs ------------------------------------------------------------


def test_ghnd_is_the_per_sample_sum_of_squared_errors_over_the_points():
    s = Outputs((torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[[3.0]], [[1.0]]])), torch.zeros(2, 4))
    t = Outputs((torch.tensor([[0.0, 0.0], [0.0, 1.0]]), torch.tensor([[[1.0]], [[1.0]]])), torch.ones(2, 4))
    # sample 0: (1 + 4) + (3 - 1)^2 = 9; sample 1: 1 + 0 = 1 (logits do not enter GHND)
    assert ghnd(s, t).tolist() == [9.0, 1.0]
    with pytest.raises(ValueError, match="the student has 2, the teacher 1"):
        ghnd(s, Outputs(t.features[:1], t.logits))
    with pytest.raises(ValueError, match=r"GHND point 1: student output \(2, 1, 1\), teacher output \(2, 1\)"):
        ghnd(s, Outputs((t.features[0], t.features[0][:, :1]), t.logits))


def test_kd_matches_its_formula():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 10, generator=g), torch.randn(5, 10, generator=g)
    y = torch.randint(0, 10, (5,), generator=g)
    for alpha, tau in ((0.5, 1.0), (0.3, 4.0)):
        p, q = F.softmax(t / tau, 1), F.softmax(s / tau, 1)
        kl = (p * (p.log() - q.log())).sum(1)
        want = alpha * F.cross_entropy(s, y, reduction="none") + (1 - alpha) * tau**2 * kl
        got = kd(s, t, y, alpha=alpha, tau=tau)
        torch.testing.assert_close(got, want)
        # batchmean KL of torch = the mean of the per-sample soft term
        torch.testing.assert_close(kl.mean(), F.kl_div(q.log(), p, reduction="batchmean"))
    # the student equal to the teacher: only the hard term is left; alpha 1: plain cross-entropy
    torch.testing.assert_close(kd(t, t, y, alpha=0.5, tau=1.0), 0.5 * F.cross_entropy(t, y, reduction="none"))
    torch.testing.assert_close(kd(s, t, y, alpha=1.0, tau=2.0), F.cross_entropy(s, y, reduction="none"))
    with pytest.raises(ValueError, match="alpha in"):
        distill_loss("kd", alpha=1.5, tau=1.0)
    with pytest.raises(ValueError, match="unknown distillation loss 'hnd'"):
        distill_loss("hnd", alpha=0.5, tau=1.0)


# -- the student -----------------------------------------------------------------------


def test_student_replaces_the_head_with_an_encoder_decoder_through_the_bottleneck():
    st = build_student("vgg_small", 4, 6, (1, 28, 28), 10, seed=0)
    again = build_student("vgg_small", 4, 6, (1, 28, 28), 10, seed=0)
    for a, b in zip(st.rest.state_dict().values(), again.rest.state_dict().values()):
        assert torch.equal(a, b)  # the same seed builds the same later layers
    assert st.bottleneck_shape == (6, 7, 7) and st.target_shape == (128, 7, 7)
    x = torch.randn(2, 1, 28, 28)
    z = st.encoder(x)
    assert z.shape == (2, 6, 7, 7) and (z >= 0).all()  # a ReLU output: what uint8 quantises
    assert st.decoder(z).shape == (2, 128, 7, 7)
    assert st.rest(st.decoder(z)).shape == (2, 10)
    # smaller than the teacher's head it replaces
    from raysplit.models.cuts import cut_model

    head = cut_model("vgg_small", 4, (1, 28, 28), 10, seed=0).head
    assert sum(p.numel() for p in st.encoder.parameters()) < sum(p.numel() for p in head.parameters())
    with pytest.raises(ValueError, match="power of two"):
        build_student("vgg_small", 4, 6, (1, 30, 30), 10)
    with pytest.raises(ValueError, match="split_layer must be >= 1"):
        build_student("vgg_small", 0, 6, (1, 28, 28), 10)


def test_teacher_must_be_the_model_without_compression(teacher_file, tmp_path):
    t = load_teacher(teacher_file, model="vgg_small", split_layer=4, input_shape=SHAPE, num_classes=10)
    assert not any(p.requires_grad for p in t.head.parameters()) and not t.head.training
    with pytest.raises(ValueError, match=r"its split_layer 4 \(the student has 3\)"):
        load_teacher(teacher_file, model="vgg_small", split_layer=3, input_shape=SHAPE, num_classes=10)
    out = tmp_path / "fixed"
    local.main(COMMON + ["--method", "fixed", "--budgets", "8", "--epochs-per-budget", "1", "--save-model",
                         "--out", str(out)])
    with pytest.raises(ValueError, match="trained with method 'fixed' and a compression module"):
        load_teacher(out / "models" / "budget_8.pt", model="vgg_small", split_layer=4, input_shape=SHAPE,
                     num_classes=10)


# -- the bundle --------------------------------------------------------------------------


def test_bundle_round_trip_and_bad_bundles():
    a, t = b"RSPL-student", b"RSPL-teacher-msg"
    assert distill.unbundle(distill.bundle(a, t)) == (a, t)
    assert distill.unbundle(a) == (a, None)
    with pytest.raises(codec.CodecError, match="leaves no teacher message"):
        distill.unbundle(distill.bundle(a, b""))
    with pytest.raises(codec.CodecError, match="truncated distillation bundle"):
        distill.unbundle(b"RSDT\x01")


# -- the stages ----------------------------------------------------------------------------


def _batch(n=8, seed=0):
    g = np.random.default_rng(seed)
    return g.random((n, *SHAPE), dtype=np.float32), g.integers(0, 10, n)


def _snapshot(*modules):
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in modules]


def _changed(before, after):
    return [any(not torch.equal(v, a[k]) for k, v in b.items()) for b, a in zip(before, after)]


def _step(c, s, phase, lr=1e-3, seed=0):
    x, y = _batch(seed=seed)
    (r,) = s.train_step([c.forward(x, y)], lr, phase)
    c.backward(r.grad)
    return r


def test_bottlefit_stages_freeze_what_the_recipe_freezes(teacher_file):
    cfg = student_cfg(teacher_file)
    for method, encoder_trains_in_stage2 in (("bottlefit", True), ("bottlefit-fe", False)):
        plan = make_plan(method, (3,), (1, 1), lr=1e-3, channels=3)
        c, s = SplitClient(cfg), SplitServer(cfg, plan=plan)
        t_head, t_rest = c.teacher.head, s.teacher.rest
        # the student's later layers start as the teacher's
        for a, b in zip(s.tail.state_dict().values(), t_rest.state_dict().values()):
            assert torch.equal(a, b)
        for phase, stage in enumerate(plan.phases):
            c.set_stage(stage.stage)
            before = _snapshot(c.head, s.decoder, s.tail, t_head, t_rest)
            r = _step(c, s, phase)
            enc, dec, tail, th, tr = _changed(before, _snapshot(c.head, s.decoder, s.tail, t_head, t_rest))
            assert not th and not tr  # the teacher never changes
            assert dec  # the decoder trains in both stages
            if phase == 0:  # GHND: encoder + decoder train, the later layers are frozen (BN statistics too)
                assert enc and not tail and r.loss > 1.0
                assert optimizer_name(c.opt) == optimizer_name(s.opt) == "adam"
            else:  # KD: the later layers train; the encoder only without -fe
                assert tail and enc == encoder_trains_in_stage2
                assert optimizer_name(c.opt) == optimizer_name(s.opt) == "sgd"
                assert s.opt.param_groups[0]["momentum"] == 0.9 and s.opt.param_groups[0]["weight_decay"] == 5e-4


def test_distillation_sends_the_teacher_activation_and_inference_does_not(teacher_file):
    cfg = student_cfg(teacher_file)
    plan = make_plan("kd", (3,), (1,), lr=1e-3, channels=3)
    c, s = SplitClient(cfg), SplitServer(cfg, plan=plan)
    c.set_stage(plan.phases[0].stage)
    x, y = _batch()
    up = c.forward(x, y)
    student, teacher = distill.unbundle(up)
    assert codec.decode(student).shape == (8, 3, 4, 4) and codec.decode(teacher).shape == (8, 128, 4, 4)
    want = c.teacher.head(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(codec.decode(teacher).values, want, rtol=1e-6)
    (r,) = s.train_step([up], 1e-3, 0)
    c.backward(r.grad)
    assert codec.decode(r.grad).shape == (8, 3, 4, 4)  # the gradient is the bottleneck's alone
    assert not distill.is_bundle(c.predict_message(x))
    # a plain message in a distillation phase, or a teacher activation of another step, is refused
    c2 = SplitClient(cfg, client_id=1)
    with pytest.raises(ValueError, match="carries no teacher activation"):
        s.train_step([c2.forward(x, y)], 1e-3, 0)
    c2.abort_step()
    c2.set_stage(plan.phases[0].stage)
    other = distill.unbundle(c2.forward(x, y))[1]
    with pytest.raises(ValueError, match="does not go with it"):
        s.train_step([distill.bundle(distill.unbundle(c.forward(x, y))[0], other)], 1e-3, 0)


def test_distillation_without_a_teacher_is_refused_early():
    with pytest.raises(ValueError, match="distils from a teacher: give --teacher PATH"):
        TrainConfig(method="bottlefit", split=SplitConfig(bottleneck=3))
    with pytest.raises(ValueError, match="trains a bottleneck-injected student: give --bottleneck"):
        TrainConfig(method="kd", split=SplitConfig())
    with pytest.raises(ValueError, match="with --bottleneck use none, kd, bottlefit or bottlefit-fe"):
        TrainConfig(method="fixed", budgets=(2,), epochs_per_budget=(1,), split=SplitConfig(bottleneck=3))
    with pytest.raises(ValueError, match="without --bottleneck"):
        SplitConfig(teacher="t.pt")
    plan = make_plan("kd", (3,), (1,), lr=1e-3, channels=3)
    c = SplitClient(student_cfg())
    with pytest.raises(ValueError, match="distils from a teacher, and this client has none"):
        c.set_stage(plan.phases[0].stage)


def test_methods_plan_their_stages_and_learning_rates():
    p = make_plan("bottlefit", (64,), (10,), lr=1e-3, channels=12)
    assert [(ph.budget, ph.first_epoch, ph.epochs, ph.stage.name) for ph in p.phases] == [
        (12, 0, 10, "ghnd"), (12, 10, 10, "kd")]
    assert [ph.save_on_exit for ph in p.phases] == [False, True]
    assert p.phases[0].stage.frozen == ("tail",) and p.phases[0].stage.optimizer == "adam"
    # x0.1 after 5 of each stage's 10 epochs, as the recipe's MultiStepLR(milestones=[5])
    assert [p.lr_at(e) for e in range(20)] == pytest.approx(([1e-3] * 5 + [1e-4] * 5) * 2)
    assert make_plan("bottlefit", (3,), (4, 2), lr=0.1, channels=3).phases[1].epochs == 2
    with pytest.raises(ValueError, match="has 2 stages .ghnd, kd.: epochs_per_budget takes one entry per stage"):
        make_plan("bottlefit", (3,), (1, 2, 3), lr=0.1, channels=3)
    assert get_method("bottlefit-fe").stages[1].frozen == ("head",)
    assert [ph.save_on_exit for ph in make_plan("none", (4,), (2,), lr=0.1, channels=8, save_last=True).phases] == [True]
    assert math.isclose(make_plan("kd", (3,), (4,), lr=0.1, channels=3).lr_at(2), 0.01)


def test_a_student_model_file_loads_without_its_teacher(teacher_file, tmp_path):
    import shutil

    t = tmp_path / "teacher.pt"
    shutil.copy(teacher_file, t)
    out = tmp_path / "kd"
    local.main(COMMON + ["--method", "kd", "--bottleneck", "3", "--teacher", str(t), "--epochs-per-budget", "1",
                         "--lr", "0.001", "--out", str(out)])
    t.unlink()  # the teacher is for training only
    m = load_model(out / "models" / "budget_3.pt")
    assert m.split.bottleneck == 3 and m.budget == 3 and m.client.teacher is None
    x, _ = _batch()
    assert m.predict(x).shape == (8,)


def test_bottleneck_quantisation_end_to_end(teacher_file, tmp_path):
    """Post-training BQ: the saved student scored over split inference with float32 and with
    the codec's uint8 (one scale and zero point per tensor): a quarter of the payload, the
    same predictions up to the quantisation error."""
    from raysplit.config import TrainConfig
    from raysplit.training import bq

    out = tmp_path / "bf"
    local.main(COMMON + ["--method", "bottlefit", "--bottleneck", "3", "--teacher", str(teacher_file),
                         "--epochs-per-budget", "1", "--lr", "0.001", "--out", str(out)])
    cfg = TrainConfig(method="none", dataset="digits", image_size=16, test_subset=64)
    test = bq.test_set(cfg)
    f32, u8 = (bq.score(out / "models" / "budget_3.pt", test, k, batch_size=32) for k in ("float32", "uint8"))
    assert f32.total == u8.total == 64 and u8.codec == "uint8"
    # 32 samples x 3 x 4 x 4 values per message: 4 bytes each as float32, 1 as uint8, plus the headers
    assert u8.bytes_per_sample < 0.3 * f32.bytes_per_sample
    assert 3 * 16 <= u8.bytes_per_sample < 3 * 16 + 4
    assert abs(u8.accuracy - f32.accuracy) <= 2 / 64  # at most two of 64 predictions move
    m = load_model(out / "models" / "budget_3.pt")
    from raysplit import codec

    m.client.codec = codec.CodecConfig.parse("uint8")
    msg = codec.decode(m.client.predict_message(test.x[:32]))
    z = m.client.head.eval()(torch.from_numpy(test.x[:32])).detach().numpy()
    step = (z.max() - z.min()) / 255
    assert np.abs(msg.values - z).max() <= step / 2 + 1e-6  # affine 8-bit: within half a step
