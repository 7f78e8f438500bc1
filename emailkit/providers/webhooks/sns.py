"""Amazon SNS HTTP(S) deliveries: envelope, signing-certificate sources and signature verification."""

from __future__ import annotations

import base64
import binascii
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from emailkit.domain.ports.webhooks import (
    CertificateFetcher,
    MalformedPayload,
    SignatureInvalid,
    VerificationUnavailable,
)
from emailkit.providers.webhooks.common import log

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"

_CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
_SIGNED_FIELDS = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION_CONFIRMATION: _CONFIRMATION_FIELDS,
    UNSUBSCRIBE_CONFIRMATION: _CONFIRMATION_FIELDS,
}
_OPTIONAL_FIELDS = frozenset({"Subject"})
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}

# sns.<region>.amazonaws.com, plus the China partition's amazonaws.com.cn.
_SNS_HOST = re.compile(r"^sns\.[a-z]{2}(?:-[a-z]+)+-\d+\.amazonaws\.com(?:\.cn)?$")
_CERT_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.pem$")


def is_sns_url(url: str, *, pem: bool = False) -> bool:
    """An ``https://sns.<region>.amazonaws.com/`` URL with no credentials or port (and a .pem path)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    # netloc == hostname rules out a port and user:password@; the host must be exactly an SNS endpoint.
    if parts.scheme != "https" or port is not None or parts.netloc != parts.hostname:
        return False
    if not _SNS_HOST.match(parts.hostname or ""):
        return False
    return not pem or (parts.path.endswith(".pem") and not parts.query and not parts.fragment)


def envelope_type(envelope: dict[str, Any]) -> str | None:
    value = envelope.get("Type")
    return value if isinstance(value, str) else None


def canonical_string(envelope: dict[str, Any]) -> bytes:
    """The bytes SNS signs: selected fields as ``Name\\nValue\\n`` in byte order of their names."""
    kind = envelope_type(envelope)
    fields = _SIGNED_FIELDS.get(kind or "")
    if fields is None:
        raise SignatureInvalid(f"unsupported SNS message type {kind!r}")
    out: list[str] = []
    for name in fields:
        value = envelope.get(name)
        if value is None and name in _OPTIONAL_FIELDS:
            continue
        if not isinstance(value, str):
            raise SignatureInvalid(f"SNS field {name} missing")
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode()


class CertificateStore:
    """SNS signing keys by certificate URL: memory cache, then a directory of PEM files, then the fetcher.

    Certificates are trusted because of where they come from (an AWS SNS https host), as AWS's own SDK
    verifiers do; expiry is not enforced so archived messages and offline certificate files still verify.
    """

    def __init__(
        self,
        *,
        directory: Path | None = None,
        fetch: CertificateFetcher | None = None,
        max_cached: int = 32,
    ) -> None:
        self._directory = directory
        self._fetch = fetch
        self._max_cached = max_cached
        self._cache: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()

    async def public_key(self, url: str) -> rsa.RSAPublicKey:
        cached = self._cache.get(url)
        if cached is not None:
            self._cache.move_to_end(url)
            return cached
        key = _rsa_key(await self._load_pem(url), url)
        self._cache[url] = key
        if len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return key

    async def _load_pem(self, url: str) -> bytes:
        name = urlsplit(url).path.rsplit("/", 1)[-1]
        if self._directory is not None and _CERT_FILE.match(name):
            path = self._directory / name
            if path.is_file():
                return path.read_bytes()
        if self._fetch is None:
            raise VerificationUnavailable(f"SNS certificate {name} is not in the certificate directory")
        try:
            return await self._fetch(url)
        except Exception as exc:
            log.warning("fetching SNS certificate %s failed: %s", url, exc)
            raise VerificationUnavailable("SNS signing certificate could not be fetched") from exc


def _rsa_key(pem: bytes, url: str) -> rsa.RSAPublicKey:
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise VerificationUnavailable(f"SNS certificate at {url} is not a PEM certificate") from exc
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureInvalid("SNS certificate does not hold an RSA key")
    return key


async def verify_envelope(envelope: dict[str, Any], certificates: CertificateStore) -> None:
    algorithm = _HASHES.get(str(envelope.get("SignatureVersion", "")))
    if algorithm is None:
        raise SignatureInvalid("SNS SignatureVersion must be 1 or 2")
    cert_url = envelope.get("SigningCertURL") or envelope.get("SigningCertUrl")
    if not isinstance(cert_url, str) or not is_sns_url(cert_url, pem=True):
        raise SignatureInvalid("SNS SigningCertURL is not an https://sns.<region>.amazonaws.com/*.pem URL")
    signature_b64 = envelope.get("Signature")
    if not isinstance(signature_b64, str):
        raise SignatureInvalid("SNS Signature missing")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureInvalid("SNS Signature is not base64") from None
    message = canonical_string(envelope)
    key = await certificates.public_key(cert_url)
    try:
        key.verify(signature, message, padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise SignatureInvalid("SNS signature does not match") from None


def require_envelope(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise MalformedPayload("SNS body must be a JSON object")
    return payload
