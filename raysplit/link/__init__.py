"""Network models for edge emulation and split inference: channels, links, media, traces.

The pure pieces, each in its own module (no Ray):

* :mod:`~raysplit.link.spec`: :class:`LinkSpec` / :class:`CellSpec` and their text
  (``parse_link("10mbit/40ms/1%")``, ``parse_cell("40mbit")``);
  :mod:`~raysplit.link.profiles`: built-in ``PROFILES`` and ``CELLS`` with sources;
* :mod:`~raysplit.link.packets`: MTU, per-packet headers, wire bytes;
* :mod:`~raysplit.link.loss`: Bernoulli and Gilbert-Elliott loss, ARQ and Mathis goodput;
* :mod:`~raysplit.link.capacity`: constant, fading (:mod:`~raysplit.link.channel`'s
  Shannon rate over block fading) and trace-replay capacity; :mod:`~raysplit.link.traces`;
* :mod:`~raysplit.link.fluid`: max-min fair sharing of resources by flows, exactly timed;
* :mod:`~raysplit.link.medium`: a run's network (links, cells, backhaul, shards) with the
  conservative virtual clock, and :func:`transfer_time` for one message on one link;
* :mod:`~raysplit.link.compute`: simulated compute times (measured, scaled, FLOPs model).
"""

from raysplit.link.medium import ClientLink, Medium, StepTiming, TransferPlan, transfer_time
from raysplit.link.profiles import CELLS, PROFILES, get_cell, get_profile
from raysplit.link.spec import CellSpec, LinkSpec, parse_cell, parse_link

__all__ = ["CELLS", "CellSpec", "ClientLink", "LinkSpec", "Medium", "PROFILES", "StepTiming", "TransferPlan",
           "get_cell", "get_profile", "parse_cell", "parse_link", "transfer_time"]
