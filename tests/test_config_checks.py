"""The configs' shared range checks name the field, the bound, the None word and the value."""

import pytest

from raysplit.config.energy import EnergySplitConfig
from raysplit.config.nair import NairConfig
from raysplit.config.train import TrainConfig


@pytest.mark.parametrize("cls, kwargs, message", [
    (TrainConfig, dict(batch_size=0), "batch_size must be >= 1, got 0"),
    (TrainConfig, dict(lk=-1), "lk must be >= 0, got -1"),
    (TrainConfig, dict(train_subset=0), "train_subset must be >= 1 (or all), got 0"),
    (TrainConfig, dict(image_size=-2), "image_size must be >= 1 (or auto), got -2"),
    (NairConfig, dict(slices=0), "slices must be >= 1, got 0"),
    (NairConfig, dict(test_subset=-1), "test_subset must be >= 1 (or all), got -1"),
    (EnergySplitConfig, dict(infer_batch=0), "infer_batch must be >= 1, got 0"),
    (EnergySplitConfig, dict(image_size=0), "image_size must be >= 1 (or native), got 0"),
])
def test_bad_values_are_named_with_what_is_allowed(cls, kwargs, message):
    with pytest.raises(ValueError) as e:
        cls(**kwargs)
    assert str(e.value) == message


def test_none_and_bounds_pass():
    cfg = TrainConfig(train_subset=None, image_size=None, lk=0, batch_size=1)
    assert cfg.train_subset is None and cfg.lk == 0
