"""Fuzzing: random and mutated payloads at the decoder and at a shard's handler, in-process.

Pass means: nothing but a refusal comes out (no other exception, no crash), every call
returns within a bound (no hang), and the shard's model state is exactly what the
legitimate client's steps made it (the hostile ones changed nothing), while that client,
interleaved with them, is served throughout.
"""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest

from raysplit import codec
from raysplit.config import SplitConfig
from raysplit.identity import Identity, tenant_key
from raysplit.keys import Keyring
from raysplit.runtime.actors.shard import Shard
from raysplit.training.client import SplitClient
from raysplit.training.guards import NonFiniteError, Refused
from raysplit.training.methods import make_plan
from raysplit.training.server import SplitServer

CFG = SplitConfig(model="vgg_small", input_shape=(1, 16, 16), num_classes=10, torch_threads=1, seed=4)
PLAN = make_plan("fixed", (4,), (1,), lr=0.1, channels=128)
TENANT = "acme"
N_DECODE = 10_000
N_SHARD = 10_000


def rng_batch(rng, n=4):
    return rng.standard_normal((n, 1, 16, 16)).astype(np.float32), rng.integers(0, 10, n)


def seeds(rng, ring) -> list[bytes]:
    """Well-formed messages of many kinds to mutate."""
    out = []
    for spec in ("float32", "float16+lz4", "int8+zstd", "uint8"):
        for key in (ring.client_key(0), None):
            c = SplitClient(CFG.replace(codec=spec), 0, tenant_key=tenant_key(TENANT), key=key)
            c.set_budget(int(rng.choice([1, 4, 128])))
            out.append(c.forward(*rng_batch(rng)))
            c.abort_step()
            out.append(c.predict_message(rng_batch(rng)[0]))
    grad = codec.encode(rng.standard_normal((3, 2, 4, 4)).astype(np.float32), np.array([5, 1]), (3, 128, 4, 4),
                        "float32", kind=codec.KIND_GRADIENT, step=9, layout="channel", key=ring.client_key(0))
    return out + [grad]


def mutate(rng, buf: bytes) -> bytes:
    b = bytearray(buf)
    op = rng.integers(0, 9)
    if op == 0:  # truncate
        return bytes(b[: rng.integers(0, len(b))])
    if op == 1:  # flip bytes anywhere
        for i in rng.integers(0, len(b), rng.integers(1, 8)):
            b[i] ^= int(rng.integers(1, 256))
        return bytes(b)
    if op == 2:  # flip bytes of the fixed header (kinds, versions, flags, dims, ids)
        for i in rng.integers(0, min(len(b), 48), rng.integers(1, 4)):
            b[i] = int(rng.integers(0, 256))
        return bytes(b)
    if op == 3:  # a header field set to an extreme
        i = int(rng.integers(4, min(len(b), 44)))
        b[i : i + 4] = bytes(rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"]))
        return bytes(b)
    if op == 4:  # trailing garbage
        return bytes(b) + os.urandom(int(rng.integers(1, 64)))
    if op == 5:  # a chunk deleted from the middle
        i = int(rng.integers(0, len(b)))
        return bytes(b[:i] + b[i + int(rng.integers(1, 32)) :])
    if op == 6:  # random bytes behind a valid magic and version
        return b"RSPL" + bytes([int(rng.choice([1, 2, 3]))]) + os.urandom(int(rng.integers(0, 400)))
    if op == 7:  # pure noise
        return os.urandom(int(rng.integers(0, 300)))
    return bytes(b[: 4]) + b"\x00" * int(rng.integers(0, 80))  # zeros after the magic


def test_the_decoder_refuses_10000_random_and_mutated_buffers_with_a_codec_error_only():
    rng = np.random.default_rng(11)
    ring = Keyring(os.urandom(32), TENANT)
    base = seeds(rng, ring)
    outcomes = {"decoded": 0, "refused": 0}
    t0 = time.perf_counter()
    for i in range(N_DECODE):
        buf = mutate(rng, base[i % len(base)])
        t = time.perf_counter()
        try:
            codec.decode(buf, key=ring.client_key(0) if i % 2 else None)
            outcomes["decoded"] += 1
        except codec.CodecError:
            outcomes["refused"] += 1
        assert time.perf_counter() - t < 2.0, f"decode took {time.perf_counter() - t:.1f} s"
    assert sum(outcomes.values()) == N_DECODE
    assert outcomes["refused"] > 0.9 * N_DECODE
    assert time.perf_counter() - t0 < 120


class Hostile:
    """What an attacker without the tenant's key can send a shard."""

    POOL = 40

    def __init__(self, rng, ring):
        self.rng = rng
        self.base = seeds(rng, ring)
        other = Keyring(os.urandom(32), TENANT)  # the tenant's name, another key
        wrong = SplitConfig(model="vgg_small", input_shape=(1, 32, 32), num_classes=10, torch_threads=1)
        self.foreign = self._pool(SplitClient(CFG, 0, tenant_key=tenant_key(TENANT), key=other.client_key(0)), 16)
        self.wrong_shape = self._pool(SplitClient(wrong, 0, tenant_key=tenant_key(TENANT), key=ring.client_key(0)),
                                      32)
        self.nan = [self._nan(ring, 10**6 + j) for j in range(self.POOL)]
        self.replays: list[bytes] = []
        self.big = b"RSPL\x03" + os.urandom(400_000)

    def _pool(self, client, side) -> list[bytes]:
        out = []
        for j in range(self.POOL):  # far-ahead step ids: they are never taken for replays
            client.step = 10**6 + j
            out.append(client.forward(self.rng.standard_normal((4, 1, side, side)).astype(np.float32), np.arange(4)))
            client.abort_step()
        return out

    @staticmethod
    def _nan(ring, step) -> bytes:
        """NaN in a message signed with a real key whose header allows it."""
        return codec.encode(np.full((4, 4, 4, 4), np.nan, np.float32), np.arange(4), (4, 128, 4, 4),
                            codec.CodecConfig(allow_nonfinite=True), labels=np.arange(4), step=step, client_id=1,
                            tenant=tenant_key(TENANT), cut=CFG.split_layer, key=ring.client_key(1))

    def payload(self, i: int) -> tuple[str, bytes]:
        rng, k, j = self.rng, i % 10, (i // 10) % self.POOL
        if k == 0:
            return "another key", self.foreign[j]
        if k == 1:
            return "wrong shape (signed)", self.wrong_shape[j]
        if k == 2 and self.replays:
            return "replayed step", self.replays[int(rng.integers(0, len(self.replays)))]
        if k == 3:
            return "oversized", self.big
        if k == 4:
            return "NaN payload (signed)", self.nan[j]
        return "mutated", mutate(rng, self.base[i % len(self.base)])


def test_a_shard_refuses_10000_hostile_payloads_changes_nothing_and_serves_the_legitimate_client():
    rng = np.random.default_rng(12)
    ring = Keyring(os.urandom(32), TENANT)
    shard = Shard(CFG, PLAN, 0, Identity("fuzz", TENANT), 8, "cpu", clients=[0, 1], max_batch=4, recovery=True,
                  keyring=ring)
    ref = SplitServer(CFG, 0, plan=PLAN, tenant_key=tenant_key(TENANT), keyring=ring)  # sees only the client
    good = SplitClient(CFG, 0, tenant_key=tenant_key(TENANT), key=ring.client_key(0))
    twin = SplitClient(CFG, 0, tenant_key=tenant_key(TENANT), key=ring.client_key(0))
    hostile = Hostile(rng, ring)
    kinds: dict[str, dict[str, int]] = {}

    async def call(buf):
        return await asyncio.wait_for(shard.train(buf, 0.1, 0), timeout=10)

    async def main():
        served = 0
        for i in range(N_SHARD):
            what, buf = hostile.payload(i)
            try:
                await call(buf)
                outcome = "answered"
            except Refused as e:
                outcome = e.reason
            except NonFiniteError:
                outcome = "nonfinite"
            kinds.setdefault(what, {}).setdefault(outcome, 0)
            kinds[what][outcome] += 1
            if i % 250 == 0:  # the legitimate client goes on, in between
                x, y = rng_batch(rng)
                up = good.forward(x, y)
                reply = await call(up)
                good.backward(reply.result.grad)
                (want,) = ref.train_step([twin.forward(x, y)], 0.1)
                twin.backward(want.grad)
                assert reply.result.loss == pytest.approx(want.loss, rel=1e-6, abs=1e-7)
                hostile.replays.append(up)
                served += 1
        return served

    t0 = time.perf_counter()
    served = asyncio.run(main())
    elapsed = time.perf_counter() - t0
    assert served == N_SHARD // 250
    a, b = shard.server.modules_state(), ref.modules_state()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    answered = {w: o.get("answered", 0) for w, o in kinds.items()}
    assert answered.get("another key") == 0 and answered.get("wrong shape (signed)") == 0
    assert answered.get("NaN payload (signed)") == 0 and answered.get("oversized") == 0
    # a replayed step is answered from the log (its first reply), never applied again
    assert set(kinds["replayed step"]) == {"answered"}
    assert kinds["another key"] == {"unauthenticated": N_SHARD // 10}
    assert kinds["oversized"] == {"oversized": N_SHARD // 10}
    assert sum(shard.rejected.values()) >= 0.75 * N_SHARD
    assert shard.server.steps == served
    assert elapsed < 180
