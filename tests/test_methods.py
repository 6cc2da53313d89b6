"""Methods as configurations: the plans they make."""

import pytest

from raysplit.training.methods import METHODS, Stage, check_budgets, get_method, make_plan


def test_each_method_is_a_configuration():
    assert set(METHODS) == {"none", "fixed", "deprune", "prune", "kd", "bottlefit", "bottlefit-fe"}
    assert not METHODS["none"].compression and METHODS["none"].stage.regularizers == ()
    assert METHODS["deprune"].reset == "deprune" and METHODS["prune"].reset == "prune"
    assert METHODS["prune"].save_each_budget and not METHODS["deprune"].save_each_budget


def test_deprune_plan_phases():
    p = make_plan("deprune", (4, 32, 128), (2, 1, 1), lr=0.1, gamma=2, lk=1, channels=128)
    assert [(ph.budget, ph.first_epoch, ph.epochs, ph.reset) for ph in p.phases] == [
        (4, 0, 2, None), (32, 2, 1, "deprune"), (128, 3, 1, "deprune")]
    assert p.total_epochs == 4 and p.phase_at(2).index == 1 and p.phases[0].last_epoch == 1
    assert [p.lr_at(e) for e in range(4)] == pytest.approx([0.1, 0.1, 0.2, 0.2])
    assert not any(ph.save_on_exit for ph in p.phases)


def test_prune_saves_every_budget_and_reset_can_be_turned_off():
    p = make_plan("prune", (128, 4), (1,), lr=0.1, reset_filter=False, channels=128)
    assert [ph.save_on_exit for ph in p.phases] == [True, True]
    assert [ph.reset for ph in p.phases] == [None, None]


def test_none_sends_every_channel_for_the_total_epochs():
    p = make_plan("none", (4, 128), (2, 1), lr=0.1, channels=64)
    assert p.schedule.budgets == (64,) and p.schedule.epochs == (3,) and not p.compression
    with pytest.raises(ValueError, match="needs the channel count"):
        make_plan("none", (4,), (1,), lr=0.1)


@pytest.mark.parametrize(
    "method,budgets,match",
    [
        ("fixed", (200,), "budget 200 out of range: the split has 128 channels"),
        ("deprune", (128, 4), "ascending"),
        ("prune", (4, 128), "descending"),
        ("fixed", (4, 8), "exactly one budget"),
    ],
)
def test_budget_checks_name_the_problem(method, budgets, match):
    with pytest.raises(ValueError, match=match):
        check_budgets(get_method(method), budgets, 128)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown method 'bogus'; choose one of none, fixed, deprune, prune, kd"):
        get_method("bogus")
    with pytest.raises(ValueError, match="unknown parameter group 'encoder'"):
        Stage(frozen=("encoder",))
    with pytest.raises(ValueError, match="unknown task loss 'mse'"):
        Stage(task_loss="mse")
    with pytest.raises(ValueError, match="unknown regularizer 'l1'"):
        Stage(regularizers=("l1",))
