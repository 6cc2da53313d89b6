"""Distillation in a split network: where BottleFit's teacher runs, and how its targets travel.

BottleFit's stage 1 (GHND) matches the student's outputs at the decoder and at later
layers with the teacher's; stage 2 (KD) matches the logits. The student's decoder and
later layers are on the server, so the server needs the teacher's outputs there. The
teacher is split like the student:

* the client runs the teacher's **head** (the layers the bottleneck replaced) on its own
  images and sends its activation at the split, t_ed(x), with the student's bottleneck;
* the server runs the teacher's **later layers** (frozen) on t_ed(x): the targets at the
  later points and the soft labels.

So raw images never leave the client (as in all of raysplit), and what the teacher adds
to the uplink is exactly plain split learning's activation, during the distillation
stages only; inference sends the bottleneck alone. (Running the whole teacher on the
server would need the raw images there.)

On the wire, a distillation step's activation message is a **bundle** of two codec
messages, the student's and the teacher's (same step, client and tenant)::

    offset 0   4 bytes   magic b"RSDT"
    offset 4   4 bytes   uint32 little-endian: length A of the student's message
    offset 8   A bytes   the student's activation message (raysplit.codec)
    offset 8+A rest      the teacher's activation message (raysplit.codec)

Each part is a complete codec message with its own CRC; the transport counts the whole.
"""

from __future__ import annotations

import struct

import torch

from raysplit import codec
from raysplit.config.split import SplitConfig

MAGIC = b"RSDT"
_LEN = struct.Struct("<I")


def bundle(student: bytes, teacher: bytes) -> bytes:
    """One buffer carrying the student's and the teacher's activation messages."""
    return b"".join((MAGIC, _LEN.pack(len(student)), student, teacher))


def is_bundle(buf: bytes) -> bool:
    return bytes(buf[:4]) == MAGIC


def unbundle(buf: bytes) -> tuple[bytes, bytes | None]:
    """(student's message, teacher's message), or (buf, None) for a plain message."""
    if not is_bundle(buf):
        return buf, None
    if len(buf) < 8:
        raise codec.CodecError(f"truncated distillation bundle: {len(buf)} bytes, the header alone needs 8")
    (n,) = _LEN.unpack_from(buf, 4)
    if 8 + n >= len(buf):
        raise codec.CodecError(
            f"distillation bundle of {len(buf)} bytes claims a {n}-byte student message and leaves no teacher message"
        )
    mv = memoryview(buf)
    return bytes(mv[8 : 8 + n]), bytes(mv[8 + n :])


def _teacher(cfg: SplitConfig):
    if cfg.teacher is None or cfg.bottleneck is None:
        return None
    from raysplit.models.bottleneck import load_teacher

    return load_teacher(cfg.teacher, model=cfg.model, split_layer=cfg.split_layer, input_shape=cfg.input_shape,
                        num_classes=cfg.num_classes)


def client_teacher(cfg: SplitConfig):
    """The teacher's head a client computes the targets with (None without a teacher)."""
    t = _teacher(cfg)
    if t is not None:
        t.rest = None  # the client needs only the head
    return t


def server_teacher(cfg: SplitConfig, tail: torch.nn.Module, device: torch.device):
    """The teacher's later layers a server computes the targets with (None without a
    teacher); the student's later layers ``tail`` start from the teacher's weights."""
    t = _teacher(cfg)
    if t is None:
        return None
    tail.load_state_dict(t.rest.state_dict())
    t.head = None  # the server never sees the images
    t.rest.to(device)
    return t
