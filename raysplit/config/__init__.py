"""Every configuration of a run, as frozen dataclasses validated on construction. The
command line and the YAML ``--config`` file are generated from them (``cli.py``)."""

from raysplit.config.cluster import ClusterConfig
from raysplit.config.link import DeviceClass, LinkConfig
from raysplit.config.split import SplitConfig
from raysplit.config.train import TrainConfig

__all__ = ["ClusterConfig", "DeviceClass", "LinkConfig", "SplitConfig", "TrainConfig"]
