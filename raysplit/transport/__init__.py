"""How messages travel between a client and its server half (``base.Transport``)."""

from raysplit.transport.base import Exchange, Inference, Reply, Transport
from raysplit.transport.inprocess import InProcessTransport

__all__ = ["Exchange", "Inference", "InProcessTransport", "Reply", "Transport"]
