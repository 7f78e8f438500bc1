"""SES-over-SNS webhooks in tests: the provider fixtures, a self-signed SNS signing certificate, and SNS
envelopes signed with its key."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from emailkit.providers.webhooks.ses import SesWebhookParser
from emailkit.providers.webhooks.sns import canonical_string

# Copies of ../shared/fixtures/webhooks (real provider payloads), so a fresh clone tests on its own.
FIXTURES = Path(__file__).parents[1] / "fixtures" / "webhooks"
NOW = datetime(2024, 1, 1, tzinfo=UTC)
CERT_NAME = "SimpleNotificationService-0123456789abcdef.pem"
CERT_URL = f"https://sns.eu-west-1.amazonaws.com/{CERT_NAME}"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:emailkit-events"
AWS_CERT_NAME = "SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> Any:
    return json.loads(fixture_bytes(name))


def new_signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def self_signed_cert_pem(signing_key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(signing_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2021, 1, 1, tzinfo=UTC))  # expired on purpose: expiry is not enforced
        .sign(signing_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def write_cert_dir(tmp_path: Path, cert_pem: bytes) -> Path:
    """`tmp_path` holding our self-signed certificate and the real AWS one, under their SNS file names."""
    (tmp_path / CERT_NAME).write_bytes(cert_pem)
    (tmp_path / AWS_CERT_NAME).write_text(fixture_json("ses__signed_example.json")["key"]["cert_pem"])
    return tmp_path


def sign(envelope: dict[str, Any], key: rsa.RSAPrivateKey, version: str = "1") -> dict[str, Any]:
    envelope = {**envelope, "SignatureVersion": version, "SigningCertURL": CERT_URL}
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(canonical_string(envelope), padding.PKCS1v15(), algorithm)
    return {**envelope, "Signature": base64.b64encode(signature).decode()}


def notification(
    message: Any, *, subject: str | None = "Amazon SES Email Event Notification"
) -> dict[str, Any]:
    envelope = {
        "Type": "Notification",
        "MessageId": "5f2a3b4c-0000-4000-8000-000000000001",
        "TopicArn": TOPIC,
        "Message": message if isinstance(message, str) else json.dumps(message),
        "Timestamp": "2024-01-01T00:00:00.000Z",
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
    }
    if subject is not None:
        envelope["Subject"] = subject
    return envelope


def encode(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope, indent=2).encode()


def parser(cert_dir: Path | None = None, **kwargs: Any) -> SesWebhookParser:
    return SesWebhookParser(cert_dir=cert_dir, **kwargs)
