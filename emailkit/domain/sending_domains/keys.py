"""DKIM key pairs of sending domains: made here (RSA 2048, Ed25519 for RFC 8463's second signature), kept sealed.

The private keys never leave the server: sealed at rest (``domain.sealing``, purpose ``emailkit dkim keys``),
unsealed only by the keyring that signs. Changing EMAILKIT_SECRET_KEY makes them unreadable: the domain then
signs nothing (and logs why) until it is deleted and created again with new DNS records.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from datetime import date
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from emailkit.domain import sealing

PURPOSE: Final = b"emailkit dkim keys"
RSA_BITS: Final = 2048
_SELECTOR_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(frozen=True)
class KeyPair:
    private_pem: str = field(repr=False)
    # The p= of the DKIM record.
    public: str


def new_selector(today: date | None = None) -> str:
    """``ek`` + the month + 4 random characters (``ek202612x7q2``): a new key gets a new name, so a rotated
    key and its predecessor can both be published while mail signed with the old one is still in flight."""
    month = (today or date.today()).strftime("%Y%m")
    return "ek" + month + "".join(secrets.choice(_SELECTOR_ALPHABET) for _ in range(4))


def rsa_pair() -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(_pem(key), base64.b64encode(der).decode("ascii"))


def ed25519_pair() -> KeyPair:
    key = ed25519.Ed25519PrivateKey.generate()
    # RFC 8463 publishes the bare 32-byte key, not a SubjectPublicKeyInfo.
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KeyPair(_pem(key), base64.b64encode(raw).decode("ascii"))


def _pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def seal(private_pem: str, instance_secret: str) -> str:
    return sealing.seal(private_pem, instance_secret, purpose=PURPOSE)


def unseal(sealed: str, instance_secret: str) -> str:
    """Raises :class:`emailkit.domain.sealing.SecretUnreadable` when EMAILKIT_SECRET_KEY changed."""
    return sealing.unseal(sealed, instance_secret, purpose=PURPOSE)
