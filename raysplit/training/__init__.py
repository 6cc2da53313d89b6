"""Split training without Ray: the two halves and what a run is made of."""

from raysplit.training.client import SplitClient
from raysplit.training.network import SplitNetwork, build_network
from raysplit.training.server import SplitServer, StepResult

__all__ = ["SplitClient", "SplitNetwork", "SplitServer", "StepResult", "build_network"]
