"""Secrets the server must read back (provider credentials, DKIM keys, webhook signing secrets), kept sealed.

AES-GCM under a key derived (HKDF-SHA256) from EMAILKIT_SECRET_KEY and a per-use ``purpose``, so a copy of the
database alone (a backup, a replica) reveals none of them, and a value sealed for one use does not open as
another. Changing EMAILKIT_SECRET_KEY makes every sealed value unreadable; each caller says what to do then.
"""

from __future__ import annotations

import base64
import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_SEALED_VERSION: Final = "v1:"
_NONCE_BYTES: Final = 12


class SecretUnreadable(Exception):
    """A sealed value does not open with this instance's key (EMAILKIT_SECRET_KEY changed, or not sealed)."""


def _key(instance_secret: str, purpose: bytes) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
        instance_secret.encode()
    )
    return AESGCM(derived)


def seal(plaintext: str, instance_secret: str, *, purpose: bytes) -> str:
    nonce = os.urandom(_NONCE_BYTES)
    sealed = _key(instance_secret, purpose).encrypt(nonce, plaintext.encode(), None)
    return _SEALED_VERSION + base64.b64encode(nonce + sealed).decode()


def unseal(sealed: str, instance_secret: str, *, purpose: bytes) -> str:
    if not sealed.startswith(_SEALED_VERSION):
        raise SecretUnreadable("not a sealed value")
    raw = base64.b64decode(sealed.removeprefix(_SEALED_VERSION))
    try:
        return _key(instance_secret, purpose).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], None).decode()
    except InvalidTag:
        raise SecretUnreadable("sealed with another EMAILKIT_SECRET_KEY") from None
