"""What a shard checks before a message may queue for its tail (pure, no Ray).

:func:`admit` reads only the fixed header, so a hostile or broken message is refused
before it costs a decode or a place in a merged step: its size against the largest
message this run can produce, its header, its client against the clients this shard
serves, and its step against the shard's step log (a step already applied is answered
from the log; one older than that is a replay). The full decode and the checks that need
the payload (tenant, cut, shape, labels, NaN/Inf) follow in ``SplitServer``.
"""

from __future__ import annotations

from dataclasses import dataclass

from raysplit import codec
from raysplit.codec.format import CodecError, unpack_header
from raysplit.runtime.steplog import StepLog
from raysplit.training.distill import unbundle
from raysplit.training.guards import Refused

# Beyond the largest legitimate message: headers, indices, labels, lz4/zstd framing of an
# incompressible body, and a keyed tag.
SLACK_BYTES = 4096


def max_message_bytes(batch_size: int, wire_shape: tuple[int, ...]) -> int:
    """The largest training message of a run: a float32 batch of every channel with
    labels (the widest encoding, no selection), plus compression framing and slack."""
    raw = codec.encoded_size((int(batch_size), *wire_shape), wire_shape[0], codec.CodecConfig(),
                             with_labels=True, all_channels=True)
    return raw + raw // 255 + SLACK_BYTES


def server_max_bytes(server, batch_size: int) -> int:
    """The largest training message ``server`` takes: a batch at its wire shape (a
    whole-model server: at its widest cut), and a teacher's activation with it when it
    distils (a bundle, ``training/distill.py``)."""
    whole = getattr(server, "whole", None)
    shapes = [server.wire_shape] if whole is None else [whole.shapes[c] for c in server.cuts]
    n = max(max_message_bytes(batch_size, tuple(s)) for s in shapes)
    if getattr(server, "teacher", None) is not None and getattr(server, "target_shape", None) is not None:
        n += 8 + max_message_bytes(batch_size, tuple(server.target_shape))
    return n


@dataclass(frozen=True)
class Ticket:
    """An admitted message: who sent it, which step, and its logged reply if it is a
    retry of a step already applied."""

    client: int
    step: int
    cached: object = None


def admit(buf, *, max_bytes: int, clients: frozenset[int] | None, log: StepLog,
          kinds: tuple[int, ...] = (codec.KIND_ACTIVATION,)) -> Ticket:
    """Admit a training message or raise :class:`Refused`.

    Args:
        buf: the message.
        max_bytes: refuse anything larger (``max_message_bytes``).
        clients: the client ids this shard serves (None: any).
        log: the shard's step log.
        kinds: the message kinds a training call takes (U-shaped servers take gradients too).
    """
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise Refused("malformed", f"a message is bytes, got {type(buf).__name__}")
    if len(buf) > max_bytes:
        raise Refused("oversized", f"message of {len(buf)} bytes; the largest this run sends is {max_bytes}")
    try:  # a distillation bundle is admitted by its student message's header
        header, _ = unpack_header(memoryview(unbundle(buf)[0]))
    except CodecError as e:
        raise Refused("malformed", str(e)) from None
    client, step = int(header.client_id), int(header.step)
    if header.kind not in kinds:
        raise Refused("kind", f"this shard takes message kinds {list(kinds)} for training, got kind {header.kind} "
                              f"from client {client}")
    if clients is not None and client not in clients:
        raise Refused("client", f"client {client} is not served by this shard (it serves {sorted(clients)[:8]})")
    cached = log.lookup(client, step)
    if cached is None and log.is_stale(client, step):
        raise Refused("replayed", f"client {client} step {step}: steps up to {log.last[client]} are already applied")
    return Ticket(client, step, cached)
