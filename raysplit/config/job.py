"""The cluster job's command line, shared by ``jobs/deprune.py``, every tenant of
``jobs/edge.py`` and the tenant runner, so that one option means the same everywhere."""

from __future__ import annotations

from raysplit.budget.policies import AdaptiveConfig
from raysplit.config.cli import ConfigParser
from raysplit.config.cluster import ClusterConfig
from raysplit.config.link import LinkConfig
from raysplit.config.split import SplitConfig
from raysplit.config.train import TrainConfig

SECTIONS = [("training", TrainConfig), ("network", SplitConfig), ("cluster", ClusterConfig),
            ("emulated network", LinkConfig), ("adaptive budgets", AdaptiveConfig)]


def job_parser(prog: str, description: str, *, sections: tuple = (), defaults: dict | None = None) -> ConfigParser:
    """The cluster job's options (every config section, then a job's own ``sections``,
    with a job's own ``defaults``) plus ``--address``."""
    p = ConfigParser(prog, description, [*SECTIONS, *sections], defaults=defaults)
    p.parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS, else a local Ray)")
    return p


def job_config(p: ConfigParser, argv: list[str] | None) -> ClusterConfig:
    """Parse ``argv`` and build the run's ClusterConfig (bad values exit with status 2)."""
    values = p.parse(argv)
    split = p.build(SplitConfig, values[SplitConfig])
    link = p.build(LinkConfig, values[LinkConfig])
    train = p.build(TrainConfig, values[TrainConfig], split=split, link=link)
    adaptive = p.build(AdaptiveConfig, values[AdaptiveConfig])
    return p.build(ClusterConfig, values[ClusterConfig], train=train, adaptive=adaptive)
