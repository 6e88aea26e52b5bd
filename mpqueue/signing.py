"""Signed payloads: a server that holds a secret runs only jobs signed with it.

A store's owner is the trust boundary: whoever can write jobs into a store runs code
in its servers. A team sharing one PostgreSQL database (or a store shared on purpose
with MPQUEUE_SHARED_STORE) can narrow that to whoever holds a secret:
``Queue(path, secret=...)`` or ``$MPQUEUE_SECRET`` signs each job at enqueue with
HMAC-SHA256 over its task name, payload and pickled callable, and a server whose
environment has ``$MPQUEUE_SECRET`` checks that signature in the worker child before
it unpickles anything. An unsigned or mismatched job ends dead ("bad signature")
without running. The secret never travels in argv or in the store.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

from .errors import ConfigError

SECRET_ENV = "MPQUEUE_SECRET"
_LENGTH = struct.Struct(">Q")


def resolve_secret(secret: str | bytes | None) -> bytes | None:
    """The secret to sign or check with: the argument, else ``$MPQUEUE_SECRET``, else
    None (no signing)."""
    if secret is None:
        secret = os.environ.get(SECRET_ENV) or None
    if secret is None:
        return None
    if isinstance(secret, str):
        secret = secret.encode("utf-8", "surrogateescape")
    if not isinstance(secret, bytes) or not secret:
        raise ConfigError(f"secret must be a non-empty str or bytes, not {type(secret).__name__}")
    return secret


def sign(secret: bytes, name: str, payload: bytes, func: bytes | None) -> bytes:
    """The signature of a job: each part length-prefixed, so no two jobs share one."""
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    for part in (name.encode("utf-8", "surrogatepass"), payload, func or b""):
        mac.update(_LENGTH.pack(len(part)))
        mac.update(part)
    return mac.digest()


def verify(
    secret: bytes, name: str, payload: bytes, func: bytes | None, signature: bytes | None
) -> bool:
    return signature is not None and hmac.compare_digest(
        sign(secret, name, payload, func), signature
    )
