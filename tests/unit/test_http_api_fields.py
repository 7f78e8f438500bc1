"""The request fields the HTTP API providers share: mailboxes, carried headers, the wait a 429 asks for."""

from __future__ import annotations

import httpx
import pytest

from emailkit.domain.ports.provider import Address, OutgoingMessage
from emailkit.providers.http_api import FieldError, carried_headers, mailbox, retry_after

NOW = 1_765_000_000.0


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"Retry-After": "20"}, 20.0),
        ({"Retry-After": "Sat, 06 Dec 2025 05:47:25 GMT"}, 45.0),
        ({"Retry-After": "Sat, 06 Dec 2025 05:40:00 GMT"}, 0.0),
        # Resend's and Brevo's resets count seconds from now...
        ({"ratelimit-reset": "3"}, 3.0),
        ({"x-sib-ratelimit-reset": "7"}, 7.0),
        # ...others give the moment, in Unix seconds or milliseconds.
        ({"X-RateLimit-Reset": str(int(NOW) + 30)}, 30.0),
        ({"X-RateLimit-Reset": str(int(NOW * 1000) + 4500)}, 4.5),
        ({"X-RateLimit-Reset": str(int(NOW) - 5)}, 0.0),
        # Retry-After wins over a reset header.
        ({"Retry-After": "2", "ratelimit-reset": "9"}, 2.0),
    ],
)
def test_the_wait_a_rate_limited_answer_asks_for(headers: dict[str, str], wait: float) -> None:
    assert retry_after(httpx.Headers(headers), now=NOW) == pytest.approx(wait)


@pytest.mark.parametrize("headers", [{}, {"Retry-After": "soon"}, {"ratelimit-reset": "later"}])
def test_no_usable_wait(headers: dict[str, str]) -> None:
    assert retry_after(httpx.Headers(headers), now=NOW) is None


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (Address("ann@example.org"), "ann@example.org"),
        (Address("ann@example.org", "Ann Lee"), "Ann Lee <ann@example.org>"),
        (Address("ann@example.org", 'Lee, Ann "A"'), '"Lee, Ann \\"A\\"" <ann@example.org>'),
        (Address("ann@bücher.example", "Jörg\r\nBcc: x@y"), '"Jörg Bcc: x@y" <ann@xn--bcher-kva.example>'),
    ],
)
def test_mailbox(address: Address, expected: str) -> None:
    assert mailbox(address) == expected


def test_an_address_that_needs_smtputf8_cannot_be_sent() -> None:
    with pytest.raises(FieldError, match="SMTPUTF8"):
        mailbox(Address("jörg@example.org"))


def test_carried_headers_keep_ours_and_leave_the_structural_ones_to_the_api() -> None:
    message = OutgoingMessage(
        delivery_id="d1",
        sender="b@example.com",
        to=Address("a@example.org"),
        from_=Address("n@example.com"),
        subject="s",
        text="t",
        message_id="<d1@example.com>",
        headers={"List-Id": "News <news.example.com>", "Subject": "forged", "X-Note": "a\r\nBcc: x@y"},
    )
    assert carried_headers(message, reserved=frozenset({"x-note"})) == {
        "List-Id": "News <news.example.com>",
        "Message-ID": "<d1@example.com>",
        "X-Emailkit-Delivery": "d1",
    }
    assert carried_headers(message)["X-Note"] == "a Bcc: x@y"
