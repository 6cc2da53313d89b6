"""A shard batches the evaluation messages that arrive while its compute thread is busy
(``Shard.predict``): the answers are the one-by-one answers, far fewer tail calls run, and
a bad message fails alone. A real shard, in-process (no Ray)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from raysplit.config import SplitConfig
from raysplit.identity import Identity, tenant_key
from raysplit.runtime.actors.shard import Shard
from raysplit.training.client import SplitClient
from raysplit.training.methods import make_plan

CFG = SplitConfig(model="vgg_small", input_shape=(1, 16, 16), num_classes=10, torch_threads=1, seed=4)
PLAN = make_plan("fixed", (4,), (1,), lr=0.1, channels=128)
TENANT = "acme"


def _messages(n: int) -> list[bytes]:
    rng = np.random.default_rng(3)
    out = []
    for c in range(n):
        client = SplitClient(CFG, c % 4, tenant_key=tenant_key(TENANT))
        client.set_budget((4, 8, 16, 128)[c % 4])  # each message its own budget
        out.append(client.predict_message(rng.normal(size=(1 + c % 3, 1, 16, 16)).astype(np.float32)))
    return out


def test_predictions_that_arrive_together_run_as_few_batches_with_the_one_by_one_answers():
    shard = Shard(CFG, PLAN, 0, Identity("pred", TENANT), 8, "cpu", clients=[0, 1, 2, 3], max_batch=4)
    msgs = _messages(24)
    alone = [shard.server.predict([m])[0] for m in msgs]
    calls = []
    predict = shard.server.predict
    shard.server.predict = lambda bufs, **kw: (calls.append(len(bufs)), predict(bufs, **kw))[1]

    async def main():
        return await asyncio.gather(*[shard.predict(m) for m in msgs])

    got = asyncio.run(main())
    for a, b in zip(got, alone):
        np.testing.assert_array_equal(a, b)
    assert sum(calls) == len(msgs)
    assert len(calls) <= 1 + -(-len(msgs) // shard.max_merge) < len(msgs)  # the first alone, then full batches
    assert max(calls) == shard.max_merge == 8


def test_a_bad_message_in_a_batch_fails_alone():
    shard = Shard(CFG, PLAN, 0, Identity("pred", TENANT), 8, "cpu", clients=[0, 1, 2, 3], max_batch=4)
    msgs = _messages(6)
    bad = msgs[3][:-7]  # cut short: its payload does not match its header
    alone = [shard.server.predict([m])[0] for m in msgs]

    async def main():
        return await asyncio.gather(*[shard.predict(m) for m in msgs[:3] + [bad] + msgs[4:]],
                                    return_exceptions=True)

    got = asyncio.run(main())
    assert isinstance(got[3], Exception)
    for i in (0, 1, 2, 4, 5):
        np.testing.assert_array_equal(got[i], alone[i])
    with pytest.raises(Exception):
        shard.server.predict([bad])
