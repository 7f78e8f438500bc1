"""How every emailkit process logs: structlog in front of the standard library's logging.

emailkit's modules, and the libraries under them (uvicorn, Dramatiq, SQLAlchemy, httpx), log through the
standard library; structlog's ``ProcessorFormatter`` renders each of those records, so one format covers them
all: JSON lines for a log collector, or aligned console lines for a person at a terminal
(``EMAILKIT_LOG_FORMAT``, by default console on a terminal and JSON otherwise).

Every line carries the context bound where the work started (``structlog.contextvars``): the request id and
GraphQL operation of a request, the job, campaign, batch, flow or import of a job. Email addresses are masked
(``EMAILKIT_LOG_PII=true`` shows them) and the configured secrets are replaced, in the message, in bound
values and in tracebacks alike.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from emailkit.masking import mask_addresses

LogFormat = Literal["json", "console"]

# Secrets shorter than this are not looked for: replacing every "ab" would garble lines, and so short a
# secret is refused by the settings anyway.
MIN_SECRET_LENGTH = 8
REDACTED = "***"

_format: LogFormat = "console"


def current_format() -> LogFormat:
    """The format :func:`configure` chose (console until it has run)."""
    return _format


def default_format() -> LogFormat:
    return "console" if sys.stderr.isatty() else "json"


class Scrubber:
    """Masks addresses (unless `pii`) and replaces secrets in every string of an event, tracebacks included."""

    def __init__(self, *, pii: bool, secrets: Iterable[str]) -> None:
        self.pii = pii
        # Longest first: a secret that contains another is replaced whole.
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)

    def clean(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text if self.pii else mask_addresses(text)

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        for key, value in event_dict.items():
            if isinstance(value, str):
                event_dict[key] = self.clean(value)
            elif not isinstance(value, int | float | bool | type(None)):
                event_dict[key] = self.clean(str(value))
        return event_dict


def _access_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """uvicorn's access lines as fields too (uvicorn logs them as one formatted message)."""
    args = event_dict.pop("positional_args", None)
    record = event_dict.get("_record")
    if record is not None and record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
        client, method, path, version, status = args
        event_dict.update(client=client, method=method, path=path, http_version=version, status=status)
    return event_dict


def _drop_color_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # uvicorn attaches a copy of some messages with terminal colour codes.
    event_dict.pop("color_message", None)
    return event_dict


def _add_pid(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # `emailkit worker --processes N` writes N processes' lines to one stream.
    event_dict["pid"] = os.getpid()
    return event_dict


def _json_line(event_dict: MutableMapping[str, Any], **_: Any) -> str:
    return json.dumps(event_dict, default=str, ensure_ascii=False)


def configure(
    *,
    level: str,
    log_format: LogFormat | None = None,
    pii: bool = False,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Route all logging of this process through structlog, to `stream` (standard error by default); call
    once per process, from its composition root (calling again replaces the set-up)."""
    global _format
    _format = log_format or default_format()
    scrub = Scrubber(pii=pii, secrets=secrets)
    # Run for structlog's own loggers and for standard library records alike, before rendering.
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_pid,
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    renderer: Processor = (
        structlog.processors.JSONRenderer(serializer=_json_line)
        if _format == "json"
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _access_fields],
        pass_foreign_args=True,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _drop_color_message,
            # Tracebacks as text, so that the scrubber sees them too.
            structlog.processors.format_exc_info,
            scrub,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    # Python's warnings (deprecations from a library, say) become records too, in the same format.
    logging.captureWarnings(True)
    if level != "DEBUG":
        # Alembic narrates its plugin set-up at INFO; migrations log what was applied themselves.
        logging.getLogger("alembic").setLevel(logging.WARNING)
        # httpx logs every request at INFO: one line per message sent through SES or SendGrid.
        logging.getLogger("httpx").setLevel(logging.WARNING)
