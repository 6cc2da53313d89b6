"""Record buffer actor: where client loops and the scheduler put rows, events and
snapshots, and from which the driver takes them to write the run directory.

The driver is not an actor, so nothing can call it; this small actor stands in for its
inbox. It only holds items until the next ``drain`` (every half second), so the run
directory lives wherever the driver runs (under ``ray job submit``, the head node).
"""

from __future__ import annotations

import ray


class RecordBuffer:
    def __init__(self) -> None:
        self.items: list = []

    def put(self, items: list) -> None:
        self.items.extend(items)

    def drain(self) -> list:
        out, self.items = self.items, []
        return out


RecordBufferActor = ray.remote(RecordBuffer)


class BufferSink:
    """A client loop's sink in an actor: hands rows to the buffer without waiting
    (calls from one process to one actor arrive in order)."""

    def __init__(self, buffer) -> None:
        self.buffer = buffer

    def put(self, items: list) -> None:
        self.buffer.put.remote(items)
