"""Training the whole model once, offline, as the paper does (the cut is chosen at
inference): Adam at the paper's learning rate and batch size, on eq. 10's loss.

The paper gives α = 1e-3, batch 64 and μ = 0.9999 but neither the optimizer nor where
eq. 10's solver starts. Adam is the choice here (α is its step size). μ = 1 trains the
original, uncompressed model; the compressed one minimises eq. 10 *starting from the
original model*: from a random start, the L1 pull (1 - μ = 1e-4 on the sum of 433k
|θ|, which Adam's normalisation turns into a full step for every weight whose loss
gradient is weaker) zeroes the network before it learns (measured: 11 % accuracy, the
loss stuck at ln 10), while from the trained model the same μ sparsifies it and keeps
its accuracy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from raysplit.data import ArrayDataset, batches
from raysplit.energy.sparsify import sparsified_loss
from raysplit.models.whole import WholeModel, whole_model
from raysplit.training.state import load_numpy_state


@dataclass(frozen=True)
class Trained:
    """Args:
    state: the trained ``WholeModel.layers`` state (numpy).
    test_accuracy: on the test set given.
    epoch_loss: the mean task loss of each epoch.
    seconds: training time.
    """

    state: dict[str, np.ndarray]
    test_accuracy: float
    epoch_loss: list[float]
    seconds: float


@torch.no_grad()
def accuracy(model: WholeModel, data: ArrayDataset, batch_size: int = 500) -> float:
    model.layers.eval()
    correct = 0
    for x, y in batches(data, batch_size, shuffle=False, seed=0):
        correct += int((model.run(torch.from_numpy(x), 0, model.depth).argmax(1).numpy() == y).sum())
    return correct / max(len(data), 1)


def train(name: str, train_data: ArrayDataset, test_data: ArrayDataset, *, epochs: int, batch_size: int = 64,
          lr: float = 1e-3, mu: float = 0.9999, seed: int = 0, threads: int | None = None,
          init: dict[str, np.ndarray] | None = None, first_epoch: int = 0) -> Trained:
    """Train ``name`` on eq. 10's loss from its seeded initialisation, or from ``init``
    (a state of its layers); the data order of epoch e is that of epoch first_epoch + e."""
    if threads is not None:
        torch.set_num_threads(threads)
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
    model = whole_model(name, train_data.input_shape, train_data.num_classes, seed=seed)
    if init is not None:
        load_numpy_state(model.layers, init)
    opt = torch.optim.Adam(model.layers.parameters(), lr=lr)
    t0 = time.perf_counter()
    losses = []
    for epoch in range(epochs):
        model.layers.train()
        total, n = 0.0, 0
        for x, y in batches(train_data, batch_size, shuffle=True, seed=seed, epoch=first_epoch + epoch):
            logits = model.run(torch.from_numpy(x), 0, model.depth)
            task = F.cross_entropy(logits, torch.from_numpy(y))
            opt.zero_grad(set_to_none=True)
            sparsified_loss(task, model.layers, mu).backward()
            opt.step()
            total += float(task.detach()) * len(y)
            n += len(y)
        losses.append(total / max(n, 1))
    seconds = time.perf_counter() - t0
    state = {k: v.detach().numpy().copy() for k, v in model.layers.state_dict().items()}
    return Trained(state, accuracy(model, test_data), losses, seconds)


def train_both(name: str, train_data: ArrayDataset, test_data: ArrayDataset, *, epochs: int, sparse_epochs: int,
               mu: float, threads: int | None = None, **kw) -> tuple[Trained, Trained]:
    """(original, sparsified), trained alike: ``epochs`` of the plain loss, then from that
    model ``sparse_epochs`` more of the plain loss (the original) and of eq. 10 with ``mu``
    (the sparsified one, not yet pruned), on the same batches."""
    base = train(name, train_data, test_data, epochs=epochs, mu=1.0, threads=threads, **kw)
    original = train(name, train_data, test_data, epochs=sparse_epochs, mu=1.0, threads=threads, init=base.state,
                     first_epoch=epochs, **kw)
    sparse = train(name, train_data, test_data, epochs=sparse_epochs, mu=mu, threads=threads, init=base.state,
                   first_epoch=epochs, **kw)
    seconds = base.seconds
    return (Trained(original.state, original.test_accuracy, base.epoch_loss + original.epoch_loss,
                    seconds + original.seconds),
            Trained(sparse.state, sparse.test_accuracy, base.epoch_loss + sparse.epoch_loss, seconds + sparse.seconds))
