"""Recovery points are held once per client by the state store, and a shard's snapshot
carries only their step numbers (``runtime/points.py``): it does not grow with epochs or
with the clients' state, and a shard rebuilt from it still gives every client exactly its
last point and the replies logged since. A real shard (in-process) and a real state
store actor on a one-CPU local Ray.
"""

from __future__ import annotations

import asyncio
import pickle

import numpy as np
import pytest
import ray
import torch

from raysplit.config import SplitConfig
from raysplit.identity import Identity, tenant_key
from raysplit.runtime.actors.shard import Shard
from raysplit.runtime.actors.store import StateStoreActor
from raysplit.runtime.points import pack, unpack
from raysplit.runtime.steplog import last_seq
from raysplit.training.client import SplitClient
from raysplit.training.methods import make_plan

CFG = SplitConfig(model="vgg_small", input_shape=(1, 16, 16), num_classes=10, torch_threads=1, seed=4)
PLAN = make_plan("fixed", (4,), (1,), lr=0.1, channels=128)
TENANT = "acme"
CLIENTS = (0, 1, 2)


@pytest.fixture(scope="module")
def store():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        yield StateStoreActor.remote()
    finally:
        ray.shutdown()


def _shard(store) -> Shard:
    return Shard(CFG, PLAN, 0, Identity("points", TENANT), 8, "cpu", clients=list(CLIENTS), max_batch=4,
                 recovery=True, store=store)


def _loop_state(client: SplitClient, epoch: int) -> dict:
    return {"client": client.state_dict(), "epoch": epoch, "batch": 0, "seq": client.step, "samples": 4 * client.step}


def _same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


def test_points_are_held_once_per_client_and_the_snapshot_stays_the_same_size(store):
    rng = np.random.default_rng(0)
    shard = _shard(store)
    clients = {c: SplitClient(CFG, c, tenant_key=tenant_key(TENANT)) for c in CLIENTS}
    sizes, last = [], {}

    async def step(c):
        x, y = rng.standard_normal((4, 1, 16, 16)).astype(np.float32), rng.integers(0, 10, 4)
        reply = await shard.train(clients[c].forward(x, y), 0.1, 0)
        clients[c].backward(reply.result.grad)

    async def main():
        for epoch in range(3):
            for c in CLIENTS:
                for _ in range(2):
                    await step(c)
                state = last[c] = _loop_state(clients[c], epoch)
                held = await store.keep_point.remote(0, c, last_seq(state), pack(state))  # as a client host does
                await shard.recovery_point(c, held, last_seq(state))
                assert not shard.log.since(c, 0), "a point drops the replies up to it"
            await shard.snapshot(store)
            sizes.append(len(pickle.dumps(await store.get.remote(("shard", 0)))))
        await step(0)  # one reply after client 0's last point: the log keeps it
        await shard.snapshot(store)

    asyncio.run(main())
    point_bytes = len(pickle.dumps(last[0]))
    # The snapshot carries the tail and the log, not the points: the same size every epoch,
    # and well under one client's state per client.
    assert max(sizes) - min(sizes) < 1024, sizes
    snap = ray.get(store.get.remote(("shard", 0)))
    assert "recovery" not in snap and snap["points"] == {c: last_seq(last[c]) for c in CLIENTS}
    assert len(pickle.dumps(snap["log"])) < point_bytes / 10
    assert ray.get(store.stats.remote())["points"] == len(CLIENTS)  # one per client, not one per epoch

    # A shard rebuilt from the snapshot gives every client its last point and what followed.
    reborn = _shard(store)
    reborn._load(snap)
    for c in CLIENTS:
        state, entries = asyncio.run(reborn.recovery(c))
        _same(state, last[c])
        want_state, want_entries = asyncio.run(shard.recovery(c))
        _same(state, want_state)
        assert [s for s, _ in entries] == ([last_seq(last[c]) + 1] if c == 0 else [])
        assert [s for s, _ in want_entries] == ([last_seq(last[c]) + 1] if c == 0 else [])
        assert reborn.log.is_stale(c, last_seq(last[c]))
    # A checkpoint still carries the clients' states themselves.
    full = asyncio.run(shard.state_dict())
    for c in CLIENTS:
        _same(full["recovery"][c], last[c])


def test_an_older_point_never_replaces_a_newer_one(store):
    shard = _shard(store)
    client = SplitClient(CFG, 0, tenant_key=tenant_key(TENANT))
    new = {**_loop_state(client, 1), "seq": 9}
    old = {**_loop_state(client, 0), "seq": 5}
    for state in (new, old):  # arriving out of order
        held = ray.get(store.keep_point.remote(0, 7, state["seq"], pack(state)))
        asyncio.run(shard.recovery_point(7, held, state["seq"]))
    state, _ = asyncio.run(shard.recovery(7))
    assert state["seq"] == 9
    held_seq, _ = ray.get(store.points_of.remote(0))[7]
    assert held_seq == 9


def test_pack_and_unpack_give_back_every_tensor_exactly():
    tree = {"w": torch.randn(3, 4), "h": torch.randn(5).to(torch.bfloat16), "n": torch.tensor(7),
            "mask": torch.tensor([True, False]), "rng": torch.ByteTensor(list(range(16))),
            "nested": [{"m": torch.zeros(2, 2, dtype=torch.float64)}, (1, "x")], "none": None}
    packed = pack(tree)
    assert not any(isinstance(v, torch.Tensor) for v in packed.values())
    back = unpack(packed)
    for k in ("w", "h", "n", "mask", "rng"):
        assert back[k].dtype == tree[k].dtype and torch.equal(back[k], tree[k])
    assert torch.equal(back["nested"][0]["m"], tree["nested"][0]["m"]) and back["nested"][1] == (1, "x")
    assert back["none"] is None
