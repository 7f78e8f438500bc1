"""Reading a sender's settings and credentials (camelCase JSON from the API) into a provider's arguments.

Every problem is a :class:`SenderConfigError` naming the key at fault, so the API can answer with a userError
on ``settings.<key>`` or ``credentials.<key>``; unknown keys are refused too (a misspelt ``endpointUrl``
would otherwise send through the real endpoint).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

from emailkit.domain.ports.provider import SenderConfigError


def refuse_unknown(values: Mapping[str, Any], known: Collection[str]) -> None:
    for key in values:
        if key not in known:
            allowed = ", ".join(sorted(known)) or "none"
            raise SenderConfigError(str(key), f"unknown key (allowed: {allowed})")


def text(
    values: Mapping[str, Any], key: str, *, required: bool = False, default: str | None = None
) -> str | None:
    value = values.get(key)
    if value is None or value == "":
        if required:
            raise SenderConfigError(key, "required")
        return default
    if not isinstance(value, str):
        raise SenderConfigError(key, "must be a string")
    if len(value) > 2048:
        raise SenderConfigError(key, "at most 2048 characters")
    return value


def required_text(values: Mapping[str, Any], key: str) -> str:
    value = text(values, key, required=True)
    assert value is not None
    return value


def http_url(values: Mapping[str, Any], key: str, default: str) -> str:
    value = text(values, key, default=default)
    assert value is not None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SenderConfigError(key, "must be an http:// or https:// URL")
    if parts.username or parts.password:
        raise SenderConfigError(key, "must not carry credentials (they go in credentials)")
    return value.rstrip("/")
