"""Endpoint secrets: made here, shown once, kept sealed (AES-GCM) under a key derived from EMAILKIT_SECRET_KEY.

The deliverer must read a secret back to sign with it, so it cannot be stored as a hash like an API key. Sealed,
a copy of the database alone (a backup, a replica) does not let anyone forge emailkit's signatures. Changing
EMAILKIT_SECRET_KEY makes the sealed secrets unreadable: deliveries then fail with a message saying so, and
each endpoint needs to be created again.
"""

from __future__ import annotations

import base64
import os
import secrets
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX: Final = "whsec_"
# Standard Webhooks allows 24 to 64 bytes; 32 is what its reference libraries generate.
SECRET_BYTES: Final = 32
_SEALED_VERSION: Final = "v1:"
_NONCE_BYTES: Final = 12


class SecretUnreadable(Exception):
    """A sealed secret does not open with this instance's key (EMAILKIT_SECRET_KEY changed)."""


def new_secret() -> str:
    """``whsec_`` and the base64 of 32 random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_bytes(secret: str) -> bytes:
    """The key that signs: the base64-decoded part after ``whsec_``."""
    return base64.b64decode(secret.removeprefix(PREFIX))


def _key(instance_secret: str) -> AESGCM:
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"emailkit webhook endpoint secrets"
    ).derive(instance_secret.encode())
    return AESGCM(derived)


def seal(secret: str, instance_secret: str) -> str:
    nonce = os.urandom(_NONCE_BYTES)
    sealed = _key(instance_secret).encrypt(nonce, secret.encode(), None)
    return _SEALED_VERSION + base64.b64encode(nonce + sealed).decode()


def unseal(sealed: str, instance_secret: str) -> str:
    if not sealed.startswith(_SEALED_VERSION):
        raise SecretUnreadable("not a sealed secret")
    raw = base64.b64decode(sealed.removeprefix(_SEALED_VERSION))
    try:
        return _key(instance_secret).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], None).decode()
    except InvalidTag:
        raise SecretUnreadable(
            "the endpoint's signing secret cannot be read with this EMAILKIT_SECRET_KEY (was the key "
            "changed?); delete the endpoint and create it again"
        ) from None
