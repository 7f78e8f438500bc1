"""Outgoing webhooks without a database: our Standard Webhooks signer checked by the reference verifier, secrets,
sealing, the SSRF rule on addresses and URLs, the retry schedule and the per-key plan of a round."""

from __future__ import annotations

import base64
import ipaddress
import time
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from emailkit.domain.webhooks_out import destinations, sealing, signing
from emailkit.domain.webhooks_out.delivery import MAX_ATTEMPTS, RETRY_DELAYS, _Message, next_attempt, plan
from emailkit.domain.webhooks_out.destinations import DestinationRefused, InvalidUrl, parse_url, refusal
from emailkit.domain.webhooks_out.events import EVENT_TYPES, envelope

BODY = b'{"id":"evt_1","type":"campaign.started","version":1,"data":{"name":"caf\xc3\xa9"}}'


def test_the_reference_verifier_accepts_our_signature() -> None:
    secret = sealing.new_secret()
    now = int(time.time())
    headers = dict(signing.headers(sealing.secret_bytes(secret), "evt_abc", now, BODY))
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1,")
    Webhook(secret).verify(BODY, headers)  # raises when it does not verify


def test_the_reference_verifier_refuses_a_changed_body_id_timestamp_or_secret() -> None:
    secret = sealing.new_secret()
    now = int(time.time())
    good = dict(signing.headers(sealing.secret_bytes(secret), "evt_abc", now, BODY))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY + b" ", good)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**good, "webhook-id": "evt_abd"})
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**good, "webhook-timestamp": str(now + 1)})
    with pytest.raises(WebhookVerificationError):
        Webhook(sealing.new_secret()).verify(BODY, good)
    # An attempt signed ten minutes ago is refused as too old (Standard Webhooks' tolerance is five).
    old = dict(signing.headers(sealing.secret_bytes(secret), "evt_abc", now - 600, BODY))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, old)


def test_a_known_vector() -> None:
    # HMAC-SHA256 over "msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{body}" with the specification's example key.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    value = signing.signature(sealing.secret_bytes(secret), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert value == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_secrets_are_whsec_and_32_random_bytes_and_seal_and_unseal() -> None:
    secret = sealing.new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert sealing.new_secret() != secret
    sealed = sealing.seal(secret, "instance-key-0123456789")
    assert secret not in sealed
    assert sealing.unseal(sealed, "instance-key-0123456789") == secret
    with pytest.raises(sealing.SecretUnreadable, match="EMAILKIT_SECRET_KEY"):
        sealing.unseal(sealed, "another-key-0123456789")


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "address"),  # reserved (Python counts it private too)
        ("100.64.0.1", "not a public address"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "metadata"),
    ],
)
def test_addresses_that_are_not_public_are_refused(address: str, why: str) -> None:
    reason = refusal(ipaddress.ip_address(address), allow_private=False)
    assert reason is not None and why in reason


def test_public_addresses_pass_and_the_setting_lifts_all_but_metadata() -> None:
    for address in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"):
        assert refusal(ipaddress.ip_address(address), allow_private=False) is None
    for address in ("127.0.0.1", "10.0.0.1", "::1", "192.168.0.2"):
        assert refusal(ipaddress.ip_address(address), allow_private=True) is None
    for address in ("169.254.169.254", "fd00:ec2::254"):
        assert refusal(ipaddress.ip_address(address), allow_private=True) is not None


async def test_a_name_is_refused_when_any_of_its_answers_is(monkeypatch: pytest.MonkeyPatch) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return {"hooks.example.com": ["93.184.216.34"], "mixed.example.com": ["93.184.216.34", "10.0.0.7"]}[
            host
        ]

    monkeypatch.setattr(destinations, "resolve", resolve)
    assert await destinations.connectable("hooks.example.com", 443, allow_private=False) == [
        ipaddress.ip_address("93.184.216.34")
    ]
    with pytest.raises(DestinationRefused, match=r"mixed\.example\.com resolves to 10\.0\.0\.7"):
        await destinations.connectable("mixed.example.com", 443, allow_private=False)


def test_urls() -> None:
    t = parse_url("https://Hooks.Example.com/in?x=1")
    assert (t.scheme, t.host, t.port, t.target, t.host_header, t.tls) == (
        "https",
        "hooks.example.com",
        443,
        "/in?x=1",
        "hooks.example.com",
        True,
    )
    t = parse_url("http://[::1]:8080")
    assert (t.host, t.port, t.target, t.host_header) == ("::1", 8080, "/", "[::1]:8080")
    assert parse_url("https://bücher.example/ä").host == "xn--bcher-kva.example"
    assert parse_url("https://bücher.example/ä").target == "/%C3%A4"
    for bad in ("ftp://x.example", "https://user:pw@x.example/", "https:///path", "https://x.example:99999/",
                "https://x.example/a b", "x.example/hook", "https://" + "a" * 2100 + ".example"):  # fmt: skip
        with pytest.raises(InvalidUrl):
            parse_url(bad)


def test_the_retry_schedule_spans_about_a_day_in_nine_attempts() -> None:
    assert MAX_ATTEMPTS == 9
    assert [d.total_seconds() for d in RETRY_DELAYS[:5]] == [5, 60, 300, 1800, 7200]
    assert timedelta(hours=22) <= sum(RETRY_DELAYS, timedelta()) <= timedelta(hours=26)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert next_attempt(1, at) == at + timedelta(seconds=5)
    assert next_attempt(8, at) == at + timedelta(hours=8)
    assert next_attempt(9, at) is None


def _m(i: int, key: str | None) -> _Message:
    return _Message(i, f"evt_{i}", key, b"{}", 0)


def test_a_round_groups_messages_by_key_and_leaves_out_keys_waiting_for_an_earlier_message() -> None:
    due = [_m(1, "a"), _m(2, None), _m(3, "b"), _m(4, "a"), _m(5, None), _m(6, "c")]
    groups = plan(due, blocked_from={"c": 0, "b": 9})
    assert [[m.id for m in g] for g in groups] == [[1, 4], [2], [3], [5]]


def test_the_envelope() -> None:
    body = envelope(
        "evt_x", "open", {"a": 1}, workspace_id=2, occurred_at=datetime(2026, 1, 2, 3, 4, 5, 6000, UTC)
    )
    assert body == (
        '{"id":"evt_x","type":"open","version":1,"occurredAt":"2026-01-02T03:04:05.006Z",'
        '"workspaceId":"V29ya3NwYWNlOjI","data":{"a":1}}'
    )
    # Emitted since automation landed (they were reserved before).
    assert "flow.entered" in EVENT_TYPES and "flow.completed" in EVENT_TYPES
