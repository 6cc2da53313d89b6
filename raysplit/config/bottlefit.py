"""What jobs/bottlefit.py adds around the student's run: the teacher's run and the BQ codec."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from raysplit.codec import CodecConfig


@dataclass(frozen=True)
class BottleFitConfig:
    """BottleFit's job (jobs/bottlefit.py) around the student's run.

    Args:
        teacher_epochs: epochs of the teacher's run when no --teacher is given: a 'none' run of the same model, data
            and cluster, saved under <out>/teacher.
        teacher_lr: SGD learning rate of the teacher's run.
        bq_codec: wire encoding of post-training bottleneck quantisation (BottleFit: 8 bits with one scale and zero
            point per tensor, the codec's uint8); the saved student is scored with it and with --codec.
    """

    teacher_epochs: int = 3
    teacher_lr: float = 0.01
    bq_codec: str = "uint8"

    def __post_init__(self) -> None:
        if self.teacher_epochs < 1:
            raise ValueError(f"teacher_epochs must be >= 1, got {self.teacher_epochs}")
        if not self.teacher_lr > 0:
            raise ValueError(f"teacher_lr must be > 0, got {self.teacher_lr}")
        try:
            CodecConfig.parse(self.bq_codec)
        except ValueError as e:
            raise ValueError(f"bq_codec: {e}") from None

    def replace(self, **changes) -> "BottleFitConfig":
        return dataclasses.replace(self, **changes)
