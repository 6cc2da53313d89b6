"""Post-training bottleneck quantisation (BottleFit §IV-B): a saved model's accuracy and
bytes with another wire encoding for what travels.

BottleFit quantises the bottleneck after training to 8 bits with one scale and zero point
per tensor (Jacob et al.); in raysplit that is the codec's ``uint8`` encoding. Nothing is
retrained: the same model file is scored twice over split inference (the wire codec's
real messages), once with the encoding it was trained with and once with the quantised
one, and the bytes are the messages' exact sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from raysplit.codec import CodecConfig
from raysplit.config.train import TrainConfig
from raysplit.data import ArrayDataset, load_dataset
from raysplit.inference import load_model
from raysplit.training.loop import evaluate
from raysplit.training.setup import image_size, test_share
from raysplit.transport.inprocess import InProcessTransport


@dataclass(frozen=True)
class Scored:
    """A model file scored with one wire encoding.

    Args:
        codec: the encoding of the inference messages.
        correct, total: over the test set (every client on its share, as the run evaluated).
        bytes_up: inference messages sent up, in all.
    """

    codec: str
    correct: int
    total: int
    bytes_up: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    @property
    def bytes_per_sample(self) -> float:
        return self.bytes_up / self.total if self.total else float("nan")


def score(path: str | Path, test: ArrayDataset, codec: str, *, batch_size: int, evaluate_mode: str = "share") -> Scored:
    """Split inference of every client's model in the file on its share of ``test``
    (``--evaluate share``; "full": each on all of it) with ``codec`` on the wire."""
    spec = CodecConfig.parse(codec).spec
    first = load_model(path)
    correct = total = nbytes = 0
    for c in first.clients:
        m = first if c == first.client_id else load_model(path, client=c)
        m.client.codec = CodecConfig.parse(spec)  # what the client encodes; the server decodes any encoding
        part = test.subset(test_share(len(test), len(first.clients), first.clients.index(c), evaluate_mode))
        k, n, b = evaluate(m.client, InProcessTransport(m.server), part, batch_size)
        correct, total, nbytes = correct + k, total + n, nbytes + b
    return Scored(spec, correct, total, nbytes)


def test_set(cfg: TrainConfig) -> ArrayDataset:
    """The test set a run of ``cfg`` evaluated on (its subset, seed and image size)."""
    return load_dataset(cfg.dataset, "test", cfg.data_dir, limit=cfg.test_subset, seed=cfg.split.seed,
                        image_size=image_size(cfg))
