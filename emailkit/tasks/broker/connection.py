"""A broker URL checked before a worker starts (one readable line when it does not answer), and shown in logs
without its password."""

from __future__ import annotations

from urllib.parse import urlsplit


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


class BrokerUnreachable(Exception):
    """The broker cannot be reached; ``str()`` is one line."""


def ping_broker(broker_url: str) -> None:
    """Fail fast, with one readable line, when a worker's broker is down or the URL is wrong."""
    scheme = urlsplit(broker_url).scheme
    try:
        if scheme in ("redis", "rediss"):
            import redis

            client = redis.Redis.from_url(broker_url, socket_connect_timeout=5)
            try:
                client.ping()
            finally:
                client.close()
        else:
            import pika  # type: ignore[import-untyped]

            params = pika.URLParameters(broker_url)
            params.socket_timeout = 5
            params.connection_attempts = 1
            pika.BlockingConnection(params).close()
    except Exception as exc:
        detail = str(exc) or type(exc).__name__
        raise BrokerUnreachable(
            f"EMAILKIT_BROKER_URL: cannot connect to {redact_url(broker_url)} ({detail})"
        ) from None
