"""Endpoint secrets: made here, shown once, kept sealed (``domain.sealing``).

The deliverer must read a secret back to sign with it, so it cannot be stored as a hash like an API key. Sealed,
a copy of the database alone (a backup, a replica) does not let anyone forge emailkit's signatures. Changing
EMAILKIT_SECRET_KEY makes the sealed secrets unreadable: deliveries then fail with a message saying so, and
each endpoint needs to be created again.
"""

from __future__ import annotations

import base64
import secrets
from typing import Final

from emailkit.domain import sealing
from emailkit.domain.sealing import SecretUnreadable as SecretUnreadable

PREFIX: Final = "whsec_"
# Standard Webhooks allows 24 to 64 bytes; 32 is what its reference libraries generate.
SECRET_BYTES: Final = 32


def new_secret() -> str:
    """``whsec_`` and the base64 of 32 random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_bytes(secret: str) -> bytes:
    """The key that signs: the base64-decoded part after ``whsec_``."""
    return base64.b64decode(secret.removeprefix(PREFIX))


_PURPOSE: Final = b"emailkit webhook endpoint secrets"


def seal(secret: str, instance_secret: str) -> str:
    return sealing.seal(secret, instance_secret, purpose=_PURPOSE)


def unseal(sealed: str, instance_secret: str) -> str:
    try:
        return sealing.unseal(sealed, instance_secret, purpose=_PURPOSE)
    except sealing.SecretUnreadable:
        raise SecretUnreadable(
            "the endpoint's signing secret cannot be read with this EMAILKIT_SECRET_KEY (was the key "
            "changed?); delete the endpoint and create it again"
        ) from None
