"""Global IDs (base64url of "Type:pk"), shared by the GraphQL schema and the REST routes."""

from __future__ import annotations

import base64
import binascii

# Every primary key is a signed 64-bit integer; a larger number names no row and would overflow the driver.
MAX_PK = 2**63 - 1


def encode(type_name: str, pk: int) -> str:
    return base64.urlsafe_b64encode(f"{type_name}:{pk}".encode()).decode().rstrip("=")


def parse(value: str) -> tuple[str, int] | None:
    """(type name, primary key), or None when `value` is not a global ID."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    type_name, _, pk = raw.partition(":")
    return (type_name, int(pk)) if type_name and is_pk(pk) else None


def is_pk(text: str) -> bool:
    """Whether `text` is the decimal form of a possible primary key (ASCII digits, at most 64 bits)."""
    return text.isascii() and text.isdigit() and int(text) <= MAX_PK


def pk_of(value: str, expected: str) -> int | None:
    """The primary key of a global ID of the expected type, else None."""
    parsed = parse(value)
    return parsed[1] if parsed is not None and parsed[0] == expected else None
