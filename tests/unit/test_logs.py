"""Log lines: the format, the bound context, masked addresses and secrets kept out."""

from __future__ import annotations

import logging

import httpx
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from emailkit.logconfig import Scrubber
from emailkit.masking import mask_addresses, mask_email
from emailkit.web.requestcontext import RequestContextMiddleware
from tests.support.logs import captured_logs, json_lines

log = logging.getLogger("emailkit.test")


def test_addresses_are_masked_as_on_the_unsubscribe_page() -> None:
    assert mask_email("jane.doe@example.com") == "j…e@example.com"
    assert (
        mask_addresses("to jane.doe@example.com, ab@example.org: 550")
        == "to j…e@example.com, a…@example.org: 550"
    )
    # A login in a URL is not a person's address; a mailto: address is.
    assert mask_addresses("postgresql://mailer@db.example.com/x") == "postgresql://mailer@db.example.com/x"
    assert mask_addresses("<mailto:unsub+x@example.com>") == "<mailto:u…x@example.com>"
    assert mask_addresses("no address @ here, user@localhost") == "no address @ here, user@localhost"


def test_scrubber_replaces_secrets_and_masks_unless_pii_is_allowed() -> None:
    scrub = Scrubber(pii=False, secrets=["hunter2-hunter2", "short"])
    event = scrub(
        None, "info", {"event": "login hunter2-hunter2 by jane@example.com", "n": 3, "short": "short"}
    )
    # Secrets under 8 characters are not looked for (they would garble lines; settings refuse them).
    assert event == {"event": "login *** by j…e@example.com", "n": 3, "short": "short"}
    shown = Scrubber(pii=True, secrets=["hunter2-hunter2"])(
        None, "info", {"event": "hunter2-hunter2 jane@example.com"}
    )
    assert shown == {"event": "*** jane@example.com"}


def test_json_lines_carry_level_event_timestamp_and_the_bound_context() -> None:
    with captured_logs(level="INFO", secrets=["s3cret-value-0001"]) as out:
        with structlog.contextvars.bound_contextvars(campaign=7, batch=12):
            log.info("sent to %s with %s", "jane@example.com", "s3cret-value-0001")
        try:
            raise ValueError("refused: bob.smith@example.org")
        except ValueError:
            log.exception("send failed")
        structlog.get_logger("emailkit.test").warning("native", email="carol@example.net", count=2)
        log.debug("not at INFO")
    first, failed, native = json_lines(out.getvalue())
    assert first["event"] == "sent to j…e@example.com with ***"
    assert (first["level"], first["logger"], first["campaign"], first["batch"]) == (
        "info",
        "emailkit.test",
        7,
        12,
    )
    assert first["timestamp"].endswith("Z")
    # The context ends with its block.
    assert "campaign" not in failed
    assert failed["level"] == "error" and "ValueError: refused: b…h@example.org" in failed["exception"]
    assert "bob.smith" not in failed["exception"]
    assert native == native | {"event": "native", "email": "c…l@example.net", "count": 2, "level": "warning"}


def test_pii_setting_shows_addresses() -> None:
    with captured_logs(pii=True) as out:
        log.info("sent to %s", "jane@example.com")
    assert json_lines(out.getvalue())[0]["event"] == "sent to jane@example.com"


def test_console_lines_are_for_people() -> None:
    with captured_logs(log_format="console") as out:
        with structlog.contextvars.bound_contextvars(request_id="r-1"):
            log.warning("slow %s", "jane@example.com")
    line = out.getvalue().strip()
    assert not line.startswith("{")
    assert "slow j…e@example.com" in line and "request_id=r-1" in line and "warning" in line


async def _echo_id(request: Request) -> PlainTextResponse:
    log.info("handling")
    return PlainTextResponse("ok")


async def test_request_id_is_accepted_or_made_and_echoed() -> None:
    app = RequestContextMiddleware(Starlette(routes=[Route("/", _echo_id)]))
    transport = httpx.ASGITransport(app=app)
    with captured_logs(level="INFO") as out:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            given = await client.get("/", headers={"X-Request-ID": "abc-123.x:y"})
            made = await client.get("/")
            forged = await client.get("/", headers={"X-Request-ID": 'x" injected="1'})
    assert given.headers["x-request-id"] == "abc-123.x:y"
    assert len(made.headers["x-request-id"]) == 32
    assert forged.headers["x-request-id"] not in ('x" injected="1', made.headers["x-request-id"])
    ids = [e["request_id"] for e in json_lines(out.getvalue())]
    assert ids == [r.headers["x-request-id"] for r in (given, made, forged)]
