"""raysplit: multi-client split learning on Ray with learned, budgeted compression.

The math (compression module, losses, schedules, codec) is in small pure modules; the
two halves of a split network (``raysplit.training``) hold state and call them; the
Ray actors in ``raysplit.runtime`` are thin shells around those halves.
"""

__version__ = "0.1.0"
