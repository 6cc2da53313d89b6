"""Every configuration of a run, as frozen dataclasses validated on construction."""

from raysplit.config.cluster import ClusterConfig
from raysplit.config.train import SplitConfig, TrainConfig

__all__ = ["ClusterConfig", "SplitConfig", "TrainConfig"]
