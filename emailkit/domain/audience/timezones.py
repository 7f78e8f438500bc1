"""Time zones of people: a person's `timezone` attribute (an IANA name), else a default."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    if not name or name != name.strip() or name.startswith(("/", ".")) or name == "localtime":
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def zone_for(attributes: Mapping[str, Any], list_default: str | None, default: str) -> ZoneInfo:
    """The person's zone: their `timezone` attribute when valid, else the list's default, else `default`."""
    for name in (attributes.get("timezone"), list_default, default):
        if isinstance(name, str):
            zone = _zone(name)
            if zone is not None:
                return zone
    return ZoneInfo("UTC")
