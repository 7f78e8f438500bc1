"""Per-provider webhook verification and normalisation (see :mod:`emailkit.domain.ports.webhooks`)."""

from emailkit.providers.webhooks.common import MemorySeenTokens, WebhookConfigError
from emailkit.providers.webhooks.registry import (
    FACTORIES,
    ParserFactory,
    UnknownProvider,
    WebhookDeps,
    build_parser,
    build_parsers,
    receive,
)

__all__ = [
    "FACTORIES",
    "MemorySeenTokens",
    "ParserFactory",
    "UnknownProvider",
    "WebhookConfigError",
    "WebhookDeps",
    "build_parser",
    "build_parsers",
    "receive",
]
