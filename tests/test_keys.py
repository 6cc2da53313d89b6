"""Per-tenant keys: files, derivation, and shards refusing what another tenant (or another
client) signed. Fast, in-process."""

from __future__ import annotations

import os

import numpy as np
import pytest

from raysplit import codec
from raysplit.config import SplitConfig
from raysplit.identity import tenant_key
from raysplit.keys import ENV, Keyring, client_key, main, parse_secret, read_secret_file, tenant_secret
from raysplit.training.client import SplitClient
from raysplit.training.guards import Refused
from raysplit.training.server import SplitServer

CFG = SplitConfig(model="vgg_small", input_shape=(1, 16, 16), num_classes=10, torch_threads=1)
X = np.random.default_rng(0).standard_normal((4, 1, 16, 16)).astype(np.float32)
Y = np.arange(4)


def tenant(name: str, secret: bytes):
    ring = Keyring(secret, name)
    server = SplitServer(CFG, tenant_key=tenant_key(name), keyring=ring)

    def client(c: int, key: bytes | None = None) -> SplitClient:
        return SplitClient(CFG, c, tenant_key=tenant_key(name), key=ring.client_key(c) if key is None else key)

    return server, client


def refused(server, buf) -> str:
    before = {k: v.copy() for k, v in server.modules_state().items()}
    with pytest.raises(Refused) as e:
        server.train_step([buf], 0.1)
    after = server.modules_state()
    assert all(np.array_equal(before[k], after[k]) for k in before)  # nothing was applied
    return e.value.reason


def test_one_tenants_message_is_refused_by_another_tenants_shard():
    a_server, a_client = tenant("acme", os.urandom(32))
    b_server, b_client = tenant("bolt", os.urandom(32))
    (ok,) = b_server.train_step([b_client(0).forward(X, Y)], 0.1)
    assert codec.decode(ok.grad, key=b_server.keyring.client_key(0)).step == 1
    assert refused(b_server, a_client(0).forward(X, Y)) == "unauthenticated"


def test_the_same_tenant_name_with_another_key_is_refused_and_so_is_an_untagged_message():
    server, _ = tenant("acme", os.urandom(32))
    _, impostor = tenant("acme", os.urandom(32))  # knows the tenant's name, not its key
    assert refused(server, impostor(0).forward(X, Y)) == "unauthenticated"
    untagged = SplitClient(CFG, 0, tenant_key=tenant_key("acme"))
    assert refused(server, untagged.forward(X, Y)) == "unauthenticated"


def test_a_client_cannot_sign_as_another_client_of_its_tenant():
    secret = os.urandom(32)
    server, client = tenant("acme", secret)
    # client 1 holds only its own key and claims to be client 0
    forged = client(0, key=client_key(secret, "acme", 1))
    assert refused(server, forged.forward(X, Y)) == "unauthenticated"


def test_a_client_refuses_a_gradient_its_tenants_shard_did_not_sign():
    server, client = tenant("acme", os.urandom(32))
    other, _ = tenant("acme", os.urandom(32))
    c = client(0)
    up = c.forward(X, Y)
    (res,) = server.train_step([up], 0.1)
    c2 = client(0)
    c2.forward(X, Y)
    fake = SplitClient(CFG, 0, tenant_key=tenant_key("acme"), key=other.keyring.client_key(0))
    (bad,) = other.train_step([fake.forward(X, Y)], 0.1)
    with pytest.raises(codec.CodecError, match="HMAC"):
        c2.backward(bad.grad)
    c.backward(res.grad)  # its own shard's gradient is fine


def test_key_files_env_and_fresh_keys(tmp_path, monkeypatch):
    path = tmp_path / "tenant.key"
    assert main([str(path)]) == 0
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    secret = read_secret_file(path)
    assert len(secret) == 32 and tenant_secret(str(path)) == secret
    with pytest.raises(SystemExit):
        main([str(path)])  # never overwrites a key
    path.chmod(0o644)
    with pytest.raises(ValueError, match="readable by group or others .* chmod 600"):
        read_secret_file(path)
    with pytest.raises(FileNotFoundError, match="python -m raysplit.keys"):
        read_secret_file(tmp_path / "missing")
    with pytest.raises(ValueError, match="64 hex digits"):
        parse_secret("abcd", "x")
    monkeypatch.setenv(ENV, secret.hex())
    assert tenant_secret(None) == secret
    monkeypatch.delenv(ENV)
    assert tenant_secret(None) != tenant_secret(None)  # fresh per run
    assert "secret" not in repr(Keyring(secret, "acme")) and secret.hex() not in repr(Keyring(secret, "acme"))
