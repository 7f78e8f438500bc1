"""Fixtures of the SES/SNS webhook tests: a signing key, its self-signed certificate, and a folder holding it."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.ses_webhooks import new_signing_key, self_signed_cert_pem, write_cert_dir


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return new_signing_key()


@pytest.fixture(scope="module")
def cert_pem(signing_key: rsa.RSAPrivateKey) -> bytes:
    return self_signed_cert_pem(signing_key)


@pytest.fixture
def cert_dir(tmp_path: Path, cert_pem: bytes) -> Path:
    return write_cert_dir(tmp_path, cert_pem)
