"""Per-tenant keys: every wire message carries an HMAC-SHA256 tag a shard checks.

How keys are made and handed out (the decision, also in the README):

* **The tenant secret** is 32 random bytes. A run reads it from ``--tenant-key-file
  PATH`` (64 hex digits; the file must not be readable by group or others, as ssh asks
  of a private key), else from the ``RAYSPLIT_TENANT_KEY`` environment variable (hex),
  else the driver draws a fresh one for the run (``secrets.token_bytes``): then only that
  run's actors hold it. Runs of one tenant that must share a key use the file.
* **Each client gets only its own key**, derived from the secret:
  ``HMAC-SHA256(secret, "raysplit/v1/client/<tenant>/<client id>")``. A client that is
  compromised can therefore sign only as itself, never as another client of its tenant,
  and never as another tenant. A shard holds the tenant secret and derives the key of the
  client a message's header names (:class:`Keyring`), so a message claiming another
  client's id fails its tag.
* **Both directions are signed**: activations with the client's key, the shard's
  gradients with the same key, so a client also refuses a gradient that did not come
  from its tenant's shard.
* **Distribution**: keys travel only in actor constructor arguments, through Ray (its
  GCS and object store), which Ray's token authentication protects; they are never
  written to ``config.json``, ``summary.json``, the records or the logs (the configuration
  holds the file's path, not the key).

The codec (format v3) appends the tag and refuses a message whose tag is missing or
wrong; the CRC stays for corruption. The 32-bit tenant word in the header stays too: it
tells a shard quickly that a message is not for it, the tag proves who made it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from functools import lru_cache
from pathlib import Path

KEY_BYTES = 32
ENV = "RAYSPLIT_TENANT_KEY"


def new_secret() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def parse_secret(text: str, where: str) -> bytes:
    """64 hex digits -> 32 bytes (whitespace around them ignored)."""
    t = text.strip()
    try:
        key = bytes.fromhex(t)
    except ValueError:
        raise ValueError(f"{where}: a tenant key is {2 * KEY_BYTES} hex digits; this is not hex") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"{where}: a tenant key is {2 * KEY_BYTES} hex digits ({KEY_BYTES} bytes), got {len(key)} "
                         f"bytes")
    return key


def read_secret_file(path: str | os.PathLike) -> bytes:
    """The secret in ``path``; refuses a file that group or others can read."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--tenant-key-file {p}: no such file (make one with: python -m raysplit.keys {p})")
    mode = p.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"--tenant-key-file {p}: readable by group or others (mode {stat.filemode(mode)}); "
                         f"run chmod 600 {p}")
    return parse_secret(p.read_text(), f"--tenant-key-file {p}")


def tenant_secret(key_file: str | None) -> bytes:
    """The run's tenant secret: the file, else $RAYSPLIT_TENANT_KEY, else a fresh one."""
    if key_file is not None:
        return read_secret_file(key_file)
    if os.environ.get(ENV):
        return parse_secret(os.environ[ENV], f"${ENV}")
    return new_secret()


def client_key(secret: bytes, tenant: str, client: int) -> bytes:
    """The key client ``client`` of ``tenant`` signs with (derived; the secret stays put)."""
    return hmac.new(secret, f"raysplit/v1/client/{tenant}/{int(client)}".encode(), hashlib.sha256).digest()


class Keyring:
    """What a shard holds: the tenant secret, and each client's key derived on demand.

    Args:
        secret: the tenant secret.
        tenant: the tenant's name.
    """

    def __init__(self, secret: bytes, tenant: str) -> None:
        if len(secret) != KEY_BYTES:
            raise ValueError(f"a tenant secret is {KEY_BYTES} bytes, got {len(secret)}")
        self._secret, self.tenant = bytes(secret), tenant
        self._derive = lru_cache(maxsize=4096)(lambda c: client_key(self._secret, self.tenant, c))

    def client_key(self, client: int) -> bytes:
        return self._derive(int(client))

    def __repr__(self) -> str:  # never print the secret
        return f"Keyring(tenant={self.tenant!r})"

    def __reduce__(self):
        return (Keyring, (self._secret, self.tenant))


def write_secret_file(path: str | os.PathLike) -> Path:
    """Create ``path`` (mode 600) holding a fresh secret; refuses to overwrite."""
    p = Path(path)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(new_secret().hex() + "\n")
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m raysplit.keys PATH``: write a new tenant key file (mode 600)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m raysplit.keys", description=main.__doc__)
    ap.add_argument("path", help="the key file to create (it must not exist)")
    a = ap.parse_args(argv)
    try:
        print(f"wrote a new tenant key to {write_secret_file(a.path)} (mode 600); pass it with --tenant-key-file")
    except FileExistsError:
        ap.exit(2, f"{ap.prog}: error: {a.path} exists; not overwriting a key\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
