import pytest

from raysplit.budget.schedule import Schedule, broadcast_epochs, check_method_budgets
from raysplit.scheduling import AsyncPolicy, SyncPolicy, make_policy


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


def test_method_budget_checks():
    check_method_budgets("deprune", (4, 128), 128)
    check_method_budgets("prune", (128, 32, 4), 128)
    with pytest.raises(ValueError, match="budget 200 exceeds the 128 channels"):
        check_method_budgets("fixed", (200,), 128)
    with pytest.raises(ValueError, match="ascending"):
        check_method_budgets("deprune", (128, 4), 128)
    with pytest.raises(ValueError, match="descending"):
        check_method_budgets("prune", (4, 128), 128)
    with pytest.raises(ValueError, match="exactly one budget"):
        check_method_budgets("fixed", (4, 8), 128)
    with pytest.raises(ValueError, match="unknown method 'bogus'"):
        check_method_budgets("bogus", (4,), 128)
    assert broadcast_epochs((3,), 2) == (3, 3)


def test_sync_policy_barrier_and_transition_log():
    p = SyncPolicy(Schedule((4, 128), (1, 1), lr=0.1, gamma=2, lk=1), [0, 1, 2])
    assert p.assignment(0).budget == 4 and p.assignment(0).epoch == 0
    assert not p.epoch_done(0, 0) and not p.epoch_done(1, 0)
    assert p.assignment(0).epoch == 0  # nobody moves until everyone is done
    assert p.epoch_done(2, 0)
    a = p.assignment(1)
    assert (a.epoch, a.budget, a.transition, a.previous_budget) == (1, 128, True, 4)
    assert a.lr == pytest.approx(0.2)
    assert len(p.transitions) == 1 and p.transitions[0].client is None
    with pytest.raises(ValueError, match="reported epoch 0 but the cluster is at epoch 1"):
        p.epoch_done(0, 0)


def test_sync_policy_dropping_a_client_releases_the_barrier():
    p = SyncPolicy(Schedule((4,), (2,), lr=0.1), [0, 1])
    p.epoch_done(0, 0)
    assert p.drop(1) is True
    assert p.assignment(0).epoch == 1


def test_async_policy_is_per_client():
    p = make_policy("async", Schedule((4, 128), (1, 1), lr=0.1), [0, 1])
    assert isinstance(p, AsyncPolicy)
    p.epoch_done(0, 0)
    assert p.assignment(0).epoch == 1 and p.assignment(1).epoch == 0
    p.epoch_done(0, 1)
    assert p.assignment(0).epoch is None  # finished
    assert [t.client for t in p.transitions] == [0]
    with pytest.raises(ValueError, match="unknown scheduling policy"):
        make_policy("chaotic", Schedule((4,), (1,), lr=0.1), [0])
