"""Logging set up as a process sets it up (emailkit.logconfig), into a buffer, and put back afterwards."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

from emailkit import logconfig


@contextmanager
def captured_logs(**options: Any) -> Iterator[io.StringIO]:
    """Every log line of the block, rendered by logconfig.configure(**options) into the buffer yielded."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    options.setdefault("level", "DEBUG")
    options.setdefault("log_format", "json")
    logconfig.configure(stream=buffer, **options)
    try:
        yield buffer
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        logging.captureWarnings(False)
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()


def json_lines(text: str) -> list[dict[str, Any]]:
    """Each line as the JSON object it must be (fails on the first line that is not one)."""
    events = []
    for line in text.splitlines():
        event = json.loads(line)
        assert isinstance(event, dict), line
        events.append(event)
    return events
