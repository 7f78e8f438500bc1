"""Servers the crash and fault tests kill or inspect: each test gets its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import RedisServer
from tests.support.smtp_sink import CountingSink


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server persisting nothing, on a free port."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def sink() -> Iterator[CountingSink]:
    """An SMTP server that counts what it accepted (and can refuse on demand)."""
    server = CountingSink()
    server.start()
    yield server
    server.stop()
