"""Behind a proxy: forwarding headers are believed only from EMAILKIT_TRUSTED_PROXIES, the chain is walked
from the right past trusted hops, and the result is what the /subscribe limit and tracking record."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select

from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.tables.feedback import Event, EventType
from emailkit.domain.content.tracked_urls import TrackingUrls
from emailkit.domain.runtime import Runtime
from emailkit.domain.tokens import TokenSigner
from emailkit.settings import Settings, load_settings
from emailkit.web.proxy import TrustedProxies, parse_address, parse_forwarded
from tests.support.environment import TEST_SECRET
from tests.support.graphql import GQL, data
from tests.tracking_data import make_deliveries

BASE = "http://testserver"


def proxies(*cidrs: str) -> TrustedProxies:
    return TrustedProxies(ipaddress.ip_network(c, strict=False) for c in cidrs)


def h(**headers: str) -> list[tuple[bytes, bytes]]:
    return [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()]


# -- resolution -------------------------------------------------------------------------------------------


def test_an_untrusted_peer_is_the_client_whatever_it_says() -> None:
    trusted = proxies("10.0.0.0/8")
    spoof = h(x_forwarded_for="1.2.3.4", x_forwarded_proto="https", forwarded="for=5.6.7.8;proto=https")
    assert trusted.resolve("198.51.100.9", spoof) == (None, None)
    # Nobody trusted (the default): not even loopback.
    assert proxies().resolve("127.0.0.1", spoof) == (None, None)


def test_a_trusted_peer_gives_the_client_and_proto() -> None:
    trusted = proxies("10.0.0.0/8")
    assert trusted.resolve("10.1.2.3", h(x_forwarded_for="203.0.113.7", x_forwarded_proto="https")) == (
        "203.0.113.7",
        "https",
    )
    # No forwarding header: the peer stays.
    assert trusted.resolve("10.1.2.3", []) == (None, None)


def test_the_chain_is_walked_right_to_left_past_trusted_hops_only() -> None:
    trusted = proxies("10.0.0.0/8", "192.168.0.0/16")
    # The client wrote "6.6.6.6" itself; the edge proxy appended the address it saw; an inner proxy its own.
    chain = h(x_forwarded_for="6.6.6.6, 203.0.113.7, 192.168.1.5")
    assert trusted.resolve("10.0.0.1", chain)[0] == "203.0.113.7"
    # A chain of trusted hops only: the leftmost is as far as anyone can tell.
    assert trusted.resolve("10.0.0.1", h(x_forwarded_for="10.9.9.9, 192.168.1.5"))[0] == "10.9.9.9"
    # Several header lines are one list.
    two_lines = [(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-for", b"203.0.113.8, 10.0.0.7")]
    assert trusted.resolve("10.0.0.1", two_lines)[0] == "203.0.113.8"
    # Something that is no address stops the walk at the last trusted hop.
    assert trusted.resolve("10.0.0.1", h(x_forwarded_for="garbage, 10.0.0.7"))[0] == "10.0.0.7"
    assert trusted.resolve("10.0.0.1", h(x_forwarded_for="unknown")) == (None, None)


def test_ports_and_ipv6_in_x_forwarded_for() -> None:
    trusted = proxies("::1/128", "127.0.0.1/32")
    assert trusted.resolve("::1", h(x_forwarded_for="203.0.113.7:5555"))[0] == "203.0.113.7"
    assert trusted.resolve("127.0.0.1", h(x_forwarded_for="[2001:db8::17]:4711"))[0] == "2001:db8::17"
    assert trusted.resolve("127.0.0.1", h(x_forwarded_for="2001:db8::18"))[0] == "2001:db8::18"
    # An IPv4-mapped IPv6 peer is the IPv4 address it maps.
    assert trusted.resolve("::ffff:127.0.0.1", h(x_forwarded_for="203.0.113.9"))[0] == "203.0.113.9"


def test_one_proto_per_hop_takes_the_clients() -> None:
    trusted = proxies("10.0.0.0/8")
    aligned = h(x_forwarded_for="203.0.113.7, 10.0.0.2", x_forwarded_proto="https, http")
    assert trusted.resolve("10.0.0.1", aligned) == ("203.0.113.7", "https")
    single = h(x_forwarded_for="203.0.113.7, 10.0.0.2", x_forwarded_proto="https")
    assert trusted.resolve("10.0.0.1", single) == ("203.0.113.7", "https")
    assert trusted.resolve("10.0.0.1", h(x_forwarded_for="203.0.113.7", x_forwarded_proto="wss")) == (
        "203.0.113.7",
        "https",
    )
    # A scheme we do not know is ignored, the address still taken.
    assert trusted.resolve("10.0.0.1", h(x_forwarded_for="203.0.113.7", x_forwarded_proto="gopher")) == (
        "203.0.113.7",
        None,
    )


def test_forwarded_syntax() -> None:
    assert parse_forwarded(['for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711"']) == [
        {"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"},
        {"for": "[2001:db8:cafe::17]:4711"},
    ]
    # Quoted strings may hold separators and escapes.
    assert parse_forwarded(['for="_a,b;c";proto=https, for="x\\"y"']) == [
        {"for": "_a,b;c", "proto": "https"},
        {"for": 'x"y'},
    ]
    assert parse_address("[2001:db8:cafe::17]:4711") == ipaddress.ip_address("2001:db8:cafe::17")
    assert parse_address('"192.0.2.43:47011"'.strip('"')) == ipaddress.ip_address("192.0.2.43")
    assert parse_address("_hidden") is None and parse_address("unknown") is None


def test_forwarded_from_a_trusted_peer() -> None:
    trusted = proxies("10.0.0.0/8")
    value = 'for=6.6.6.6;proto=http, for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.9;proto=http'
    assert trusted.resolve("10.0.0.1", h(forwarded=value)) == ("2001:db8:cafe::17", "https")
    quoted_v4 = 'for="192.0.2.43:47011";proto=https'
    assert trusted.resolve("10.0.0.1", h(forwarded=quoted_v4)) == ("192.0.2.43", "https")
    # An obfuscated client identifier cannot be used: the trusted hop before it stands.
    assert trusted.resolve("10.0.0.1", h(forwarded="for=_hidden, for=10.0.0.9")) == ("10.0.0.9", None)
    # X-Forwarded-For wins when a request carries both (a client's own Forwarded is never consulted then).
    both = h(x_forwarded_for="203.0.113.7", forwarded="for=6.6.6.6")
    assert trusted.resolve("10.0.0.1", both)[0] == "203.0.113.7"


def test_the_setting_parses_cidrs_and_refuses_garbage() -> None:
    settings = load_settings(trusted_proxies="10.0.0.0/8, 127.0.0.1 ,::1", secret_key=TEST_SECRET)
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]
    assert load_settings(secret_key=TEST_SECRET).trusted_proxies == []
    with pytest.raises(Exception, match="EMAILKIT_TRUSTED_PROXIES: not an IP address or CIDR"):
        load_settings(trusted_proxies="10.0.0.0/8,proxy.local")


# -- through the app --------------------------------------------------------------------------------------


async def _client(db: Database, peer: str, **overrides: object) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=db.url, secret_key=TEST_SECRET, public_url=BASE, **overrides)  # type: ignore[arg-type]
    runtime = Runtime(db=db, secret_key=TEST_SECRET, public_url=BASE)
    app = create_app(settings, runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(peer, 50000))
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.fixture
async def behind_proxy(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(db, "10.0.0.1", trusted_proxies="10.0.0.0/8", subscribe_rate_limit="1/minute"):
        yield c


@pytest.fixture
async def exposed(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(db, "10.0.0.1", subscribe_rate_limit="1/minute"):
        yield c


async def public_list(gql: GQL) -> str:
    created = data(
        await gql(
            "mutation($i: CreateListInput!) { createList(input: $i) { list { id } } }",
            {"i": {"name": "News", "optin": "SINGLE", "visibility": "PUBLIC"}},
        )
    )
    list_id: str = created["createList"]["list"]["id"]
    return list_id


async def signup(client: httpx.AsyncClient, list_id: str, email: str, forwarded_for: str) -> int:
    resp = await client.post(
        "/subscribe", json={"email": email, "lists": [list_id]}, headers={"X-Forwarded-For": forwarded_for}
    )
    return resp.status_code


async def test_subscribe_limit_is_per_client_behind_a_trusted_proxy(
    behind_proxy: httpx.AsyncClient, gql: GQL
) -> None:
    list_id = await public_list(gql)
    assert await signup(behind_proxy, list_id, "a@example.com", "203.0.113.1") == 200
    # Another client behind the same proxy has its own budget...
    assert await signup(behind_proxy, list_id, "b@example.com", "203.0.113.2") == 200
    # ...and the first one has spent its own, whatever it prepends.
    assert await signup(behind_proxy, list_id, "c@example.com", "198.51.100.99, 203.0.113.1") == 429


async def test_spoofed_headers_from_an_untrusted_peer_change_nothing(
    exposed: httpx.AsyncClient, gql: GQL
) -> None:
    list_id = await public_list(gql)
    assert await signup(exposed, list_id, "a@example.com", "203.0.113.1") == 200
    # A different X-Forwarded-For from the same untrusted peer is the same client.
    assert await signup(exposed, list_id, "b@example.com", "203.0.113.2") == 429


async def _events(db: Database, kind: EventType) -> list[Event]:
    async with db.session() as s:
        return list((await s.scalars(select(Event).where(Event.type == kind).order_by(Event.id))).all())


async def test_tracking_records_the_forwarded_client(behind_proxy: httpx.AsyncClient, db: Database) -> None:
    d, e = await make_deliveries(db, 2)
    urls = TrackingUrls(BASE, TokenSigner(TEST_SECRET))
    forwarded = {"Forwarded": 'for="[2001:db8::7]:1234";proto=https'}
    resp = await behind_proxy.get(urls.open_pixel(d.id).removeprefix(BASE), headers=forwarded)
    assert resp.status_code == 200
    resp = await behind_proxy.get(
        urls.click(d.id, "https://example.com/").removeprefix(BASE),
        headers={"X-Forwarded-For": "203.0.113.5"},
    )
    assert resp.status_code == 302
    resp = await behind_proxy.post(
        urls.unsubscribe(e.id).removeprefix(BASE),
        content=b"List-Unsubscribe=One-Click",
        headers={"X-Forwarded-For": "203.0.113.6", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 200
    await behind_proxy.app.state.tracking.hits.flush()  # type: ignore[attr-defined]
    assert [ev.ip for ev in await _events(db, EventType.OPEN)] == ["2001:db8::7"]
    assert [ev.ip for ev in await _events(db, EventType.CLICK)] == ["203.0.113.5"]
    assert [ev.ip for ev in await _events(db, EventType.UNSUBSCRIBE)] == ["203.0.113.6"]


async def test_tracking_from_an_untrusted_peer_records_the_peer(
    exposed: httpx.AsyncClient, db: Database
) -> None:
    (d,) = await make_deliveries(db, 1)
    urls = TrackingUrls(BASE, TokenSigner(TEST_SECRET))
    await exposed.get(urls.open_pixel(d.id).removeprefix(BASE), headers={"X-Forwarded-For": "203.0.113.5"})
    await exposed.app.state.tracking.hits.flush()  # type: ignore[attr-defined]
    assert [ev.ip for ev in await _events(db, EventType.OPEN)] == ["10.0.0.1"]


async def test_forwarded_proto_shapes_generated_urls(
    behind_proxy: httpx.AsyncClient, exposed: httpx.AsyncClient
) -> None:
    # The one URL the app builds from the request itself: the trailing-slash redirect.
    https = {"X-Forwarded-For": "203.0.113.5", "X-Forwarded-Proto": "https"}
    resp = await behind_proxy.get("/healthz/", headers=https)
    assert resp.status_code in (307, 308)
    assert resp.headers["location"] == "https://testserver/healthz"
    resp = await exposed.get("/healthz/", headers=https)
    assert resp.headers["location"] == "http://testserver/healthz"


async def test_forwarding_headers_with_nobody_trusted_are_pointed_out_once(
    exposed: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="emailkit.web.proxy"):
        for _ in range(3):
            await exposed.get("/healthz", headers={"X-Forwarded-For": "203.0.113.5"})
    (record,) = [r for r in caplog.records if r.name == "emailkit.web.proxy"]
    assert "EMAILKIT_TRUSTED_PROXIES=10.0.0.1/32" in record.getMessage()
