"""Standard Webhooks signatures (https://www.standardwebhooks.com), written from the specification.

A message carries three headers: ``webhook-id`` (the event id, the same on every retry), ``webhook-timestamp``
(Unix seconds of this attempt) and ``webhook-signature``: ``v1,`` and the base64 HMAC-SHA256 of
``"{id}.{timestamp}.{body}"`` under the endpoint's secret (the base64-decoded part after ``whsec_``). A receiver
recomputes it over the raw body, compares in constant time, and refuses a timestamp too far from its clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Final

SIGNATURE_VERSION: Final = "v1"


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one attempt."""
    signed = b"%s.%d.%s" % (message_id.encode(), timestamp, body)
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> list[tuple[str, str]]:
    """The three headers of one attempt, in the order they are sent."""
    return [
        ("webhook-id", message_id),
        ("webhook-timestamp", str(timestamp)),
        ("webhook-signature", signature(key, message_id, timestamp, body)),
    ]
