"""Signed, URL-safe tokens for the public routes (tracking, unsubscribe, confirmation).

A token is ``<payload>.<mac>``: the payload is readable (base64url of colon-joined parts) and the MAC binds it to a
purpose, so an open-pixel token can never be replayed as an unsubscribe token and a click token's target URL cannot
be swapped (no open redirect).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

MAC_BYTES = 12  # 96 bits: far beyond online guessing, keeps tracked URLs short
_SHA256_BLOCK = 64


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> str:
    # base64.urlsafe_b64encode without its Python layers: every tracked link signs two of these.
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, secret: str) -> None:
        # Derived so the raw secret is never used directly as a MAC key for user-visible data.
        self._key = hmac.new(secret.encode(), b"emailkit-tokens-v1", hashlib.sha256).digest()
        # HMAC-SHA256 (RFC 2104) with its keyed inner and outer states computed once: a MAC then costs two
        # hash copies. Every click link of every message is signed, and with OpenSSL 3 the key set-up of
        # hmac.new / hmac.digest costs more than hashing a URL.
        block = self._key.ljust(_SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def _mac(self, purpose: str, payload: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(purpose.encode() + b"\0" + payload)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:MAC_BYTES]

    def mac(self, purpose: str, payload: bytes) -> bytes:
        """The MAC of ``payload`` for ``purpose``, for tokens that need an encoding of their own (VERP
        addresses: lowercase base32, since mail servers may fold a local part's case)."""
        return self._mac(purpose, payload)

    def sign(self, purpose: str, *parts: str | int) -> str:
        payload = "\x1f".join(str(p) for p in parts).encode()
        return f"{_b64(payload)}.{_b64(self._mac(purpose, payload))}"

    def verify(self, purpose: str, token: str) -> list[str] | None:
        """The parts a token was signed with, or None when it is malformed or forged."""
        if len(token) > 8192:
            return None
        body, sep, mac = token.partition(".")
        if not sep:
            return None
        try:
            payload = _unb64(body)
            given = _unb64(mac)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(given, self._mac(purpose, payload)):
            return None
        try:
            return payload.decode().split("\x1f")
        except UnicodeDecodeError:
            return None
