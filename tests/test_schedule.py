import pytest

from raysplit.budget.schedule import Schedule, broadcast_epochs


def test_phases_budgets_and_select_lr():
    s = Schedule((4, 32, 128), (3, 2, 2), lr=0.01, gamma=10, lk=1)
    assert s.total_epochs == 7
    assert [s.budget_at(e) for e in range(7)] == [4, 4, 4, 32, 32, 128, 128]
    assert [s.lr_at(e) for e in range(7)] == pytest.approx([0.01, 0.01, 0.01, 0.1, 0.01, 0.1, 0.01])
    assert [s.is_transition(e) for e in range(7)] == [False, False, False, True, False, True, False]


def test_lk_longer_than_phase_and_disabled():
    s = Schedule((4, 128), (1, 2), lr=1.0, gamma=0.5, lk=5)
    assert [s.lr_at(e) for e in range(3)] == [1.0, 0.5, 0.5]
    assert Schedule((4, 128), (1, 2), lr=1.0, gamma=0.5, lk=0).lr_at(1) == 1.0


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(budgets=(), epochs=()), "budgets must not be empty"),
        (dict(budgets=(4, 8), epochs=(1,)), "one entry per budget"),
        (dict(budgets=(0,), epochs=(1,)), "budget 0 invalid"),
        (dict(budgets=(4,), epochs=(0,)), "epochs 0 invalid"),
        (dict(budgets=(4,), epochs=(1,), lr=0), "lr must be > 0"),
        (dict(budgets=(4,), epochs=(1,), lk=-1), "lk must be >= 0"),
    ],
)
def test_schedule_validation(kw, msg):
    kw.setdefault("lr", 0.1)
    with pytest.raises(ValueError, match=msg):
        Schedule(**kw)


def test_epoch_outside_schedule():
    with pytest.raises(ValueError, match="epoch 2 outside the schedule: allowed 0..1"):
        Schedule((4,), (2,), lr=0.1).budget_at(2)


def test_broadcast_epochs():
    assert broadcast_epochs((3,), 2) == (3, 3) and broadcast_epochs((1, 2), 2) == (1, 2)
