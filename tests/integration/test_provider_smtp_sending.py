"""The smtp provider sending against a real SMTP server (aiosmtpd) on a free port: batches over pooled
connections, the server's replies, lost and stale connections, and the commit and result hooks.

The server and the messages come from tests.support.smtp_provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from emailkit.domain.ports.provider import DELIVERY_HEADER, Address, SendResult
from emailkit.providers.smtp import REPORT_EVERY
from emailkit.providers.smtp_session import MAX_CONNECTION_TRIES
from tests.support.smtp_provider import Sink, message, parsed, provider_for, smtp_server


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_batches_reuse_one_connection(pipelining: bool) -> None:
    sink = Sink(pipelining=pipelining)
    async with smtp_server(sink) as port, provider_for(f"smtp://127.0.0.1:{port}?tls=none", pool_size=1) as p:
        first = await p.send_batch([message(i) for i in range(20)])
        second = await p.send_batch([message(i) for i in range(20, 30)])
        assert p._pool is not None and p._pool._sessions[0].pipelining is pipelining
    results = first + second
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert [r.delivery_id for r in results] == [f"d{i}" for i in range(30)]
    assert sink.connections == 1
    assert sink.recipients() == [f"user{i}@example.org" for i in range(30)]
    for result, (mail_from, rcpt, raw) in zip(results, sink.delivered, strict=True):
        msg = parsed(raw)
        assert mail_from == "bounces@news.example.com"
        assert msg[DELIVERY_HEADER] == result.delivery_id
        assert msg["Message-ID"] == f"<{result.provider_message_id}>"
        assert msg["To"].addresses[0].addr_spec == rcpt


async def test_pool_spreads_a_batch_over_its_sessions_and_sends_each_once() -> None:
    sink = Sink()
    async with smtp_server(sink) as port, provider_for(f"smtp://127.0.0.1:{port}?tls=none", pool_size=3) as p:
        results, more = await asyncio.gather(
            p.send_batch([message(i) for i in range(60)]), p.send_batch([message(i) for i in range(60, 90)])
        )
        assert p.connections_opened == 3
    assert all(r.ok for r in results + more)
    assert sorted(sink.recipients()) == sorted(f"user{i}@example.org" for i in range(90))
    assert sink.connections == 3


async def test_rejected_recipients_fail_permanently_and_the_rest_go_out() -> None:
    sink = Sink(
        rcpt_replies={
            "user3@example.org": "550 5.1.1 No such user",
            "user4@example.org": "553 5.1.3 Bad address",
        }
    )
    async with smtp_server(sink) as port, provider_for(f"smtp://127.0.0.1:{port}?tls=none", pool_size=1) as p:
        results = await p.send_batch([message(i) for i in range(8)])
    by_id = {r.delivery_id: r for r in results}
    assert not by_id["d3"].ok and not by_id["d3"].transient and by_id["d3"].error == "550 5.1.1 No such user"
    assert not by_id["d4"].ok and not by_id["d4"].transient and by_id["d4"].error.startswith("553")
    assert [r.delivery_id for r in results if r.ok] == ["d0", "d1", "d2", "d5", "d6", "d7"]
    assert sink.recipients() == [f"user{i}@example.org" for i in (0, 1, 2, 5, 6, 7)]
    # RSET cleared the failed transactions: no reconnect was needed.
    assert sink.connections == 1


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_temporary_replies_are_transient(pipelining: bool) -> None:
    sink = Sink(
        pipelining=pipelining,
        rcpt_replies={
            "user1@example.org": "451 4.7.1 Greylisted, try again later",
            "user2@example.org": "421 4.3.2 Service shutting down",
        },
        data_replies={
            "user4@example.org": "452 4.3.1 Insufficient system storage",
            "user5@example.org": "554 5.6.0 Message rejected as spam",
        },
    )
    async with smtp_server(sink) as port, provider_for(f"smtp://127.0.0.1:{port}?tls=none", pool_size=1) as p:
        results = await p.send_batch([message(i) for i in range(7)])
    by_id = {r.delivery_id: r for r in results}
    assert by_id["d1"].transient and by_id["d1"].error.startswith("451 4.7.1")
    assert by_id["d2"].transient and by_id["d2"].error.startswith("421")
    assert by_id["d4"].transient and by_id["d4"].error.startswith("452")
    assert not by_id["d5"].transient and by_id["d5"].error.startswith("554")
    assert {r.delivery_id for r in results if r.ok} == {"d0", "d3", "d6"}
    assert sorted(sink.recipients()) == [f"user{i}@example.org" for i in (0, 3, 6)]
    # After a 421 the client stops using that session and opens a new one.
    assert sink.connections == 2


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_dropped_connection_reconnects_and_marks_only_the_affected_message(pipelining: bool) -> None:
    sink = Sink(pipelining=pipelining, drop_on_data={"user5@example.org"})
    async with smtp_server(sink) as port, provider_for(f"smtp://127.0.0.1:{port}?tls=none", pool_size=1) as p:
        results = await p.send_batch([message(i) for i in range(12)])
    by_id = {r.delivery_id: r for r in results}
    affected = by_id["d5"]
    assert not affected.ok and affected.transient and "may have been delivered" in (affected.error or "")
    assert [r.delivery_id for r in results if not r.ok] == ["d5"]
    assert sorted(sink.recipients()) == sorted(f"user{i}@example.org" for i in range(12) if i != 5)
    assert sink.connections == 2


async def test_stale_pooled_session_is_replaced_without_failures() -> None:
    sink = Sink()
    async with smtp_server(sink) as port, provider_for(f"smtp://127.0.0.1:{port}?tls=none", pool_size=1) as p:
        assert all(r.ok for r in await p.send_batch([message(i) for i in range(3)]))
        # The server hangs up on the idle session (as servers do after their idle timeout).
        for protocol in sink.protocols:
            assert protocol.transport is not None
            protocol.transport.close()
        results = await p.send_batch([message(i) for i in range(3, 6)])
    assert all(r.ok for r in results), [r.error for r in results]
    assert sorted(sink.recipients()) == sorted(f"user{i}@example.org" for i in range(6))
    assert sink.connections == 2


async def test_unreachable_server_gives_transient_failures() -> None:
    probe = await asyncio.get_running_loop().create_server(asyncio.Protocol, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with provider_for(f"smtp://127.0.0.1:{port}?tls=none&timeout=5", pool_size=2) as p:
        results = await p.send_batch([message(i) for i in range(4)])
    assert [r.delivery_id for r in results] == ["d0", "d1", "d2", "d3"]
    assert all(not r.ok and r.transient and "cannot open an SMTP session" in (r.error or "") for r in results)


async def test_unresponsive_server_times_out_as_transient() -> None:
    sink = Sink(stall_on_data={"user1@example.org"})
    async with (
        smtp_server(sink) as port,
        provider_for(f"smtp://127.0.0.1:{port}?tls=none&timeout=0.5", pool_size=1) as p,
    ):
        results = await p.send_batch([message(i) for i in range(3)])
    assert results[0].ok and results[2].ok
    assert (
        not results[1].ok and results[1].transient and "no reply from the server" in (results[1].error or "")
    )


async def test_unencodable_addresses_fail_without_touching_the_network() -> None:
    sink = Sink()
    async with smtp_server(sink) as port, provider_for(f"smtp://127.0.0.1:{port}?tls=none", pool_size=1) as p:
        results = await p.send_batch(
            [
                message(0),
                message(1, to=Address("jörg@example.org")),
                message(2, to=Address("user2@bücher.example")),
            ]
        )
    assert results[0].ok and results[2].ok
    assert not results[1].ok and not results[1].transient and "SMTPUTF8" in (results[1].error or "")
    assert sink.recipients() == ["user0@example.org", "user2@xn--bcher-kva.example"]


async def test_dot_lines_are_transparent() -> None:
    text = ".starts with a dot\n.\n..two dots\nend"
    sink = Sink()
    async with smtp_server(sink) as port, provider_for(f"smtp://127.0.0.1:{port}?tls=none", pool_size=1) as p:
        results = await p.send_batch([message(0, text=text, html=None), message(1)])
    assert all(r.ok for r in results)
    body = parsed(sink.delivered[0][2]).get_content().replace("\r\n", "\n")
    assert body == text + "\n"


def test_connection_tries_bound() -> None:
    # A message is retried on fresh connections a bounded number of times within one batch.
    assert 1 < MAX_CONNECTION_TRIES <= 5


@pytest.mark.parametrize("pipelining", ["true", "false"])
async def test_commit_hook_runs_for_each_message_right_before_its_body_is_sent(pipelining: str) -> None:
    sink = Sink()
    seen: list[tuple[list[str], list[str]]] = []

    async def on_commit(ids: Sequence[str]) -> None:
        seen.append((list(ids), sink.recipients()))

    url = f"smtp://127.0.0.1:{{port}}?tls=none&pipelining={pipelining}"
    async with smtp_server(sink) as port, provider_for(url.format(port=port), pool_size=1) as p:
        messages = [message(0), message(1, to=Address("jörg@example.org")), message(2), message(3)]
        results = await p.send_batch(messages, on_commit=on_commit)

        async def refuse(ids: Sequence[str]) -> None:
            raise RuntimeError("ledger unavailable")

        with pytest.raises(RuntimeError, match="ledger unavailable"):
            await p.send_batch([message(4)], on_commit=refuse)
    assert [r.ok for r in results] == [True, False, True, True]
    # Each message is committed on its own, once the server waits for its body (the earlier ones are
    # delivered by then, it is not); the one that cannot be expressed never is.
    assert seen == [
        (["d0"], []),
        (["d2"], ["user0@example.org"]),
        (["d3"], ["user0@example.org", "user2@example.org"]),
    ]
    # A hook that fails stops that message before any of its body went out.
    assert sorted(sink.recipients()) == ["user0@example.org", "user2@example.org", "user3@example.org"]


async def test_results_are_reported_a_group_at_a_time_while_the_batch_is_still_sending() -> None:
    sink = Sink()
    reported: list[tuple[list[str], int]] = []

    async def on_result(results: Sequence[SendResult]) -> None:
        # What the server had accepted when the group was handed over.
        reported.append(([r.delivery_id for r in results], len(sink.recipients())))

    count = 3 * REPORT_EVERY + 7
    async with smtp_server(sink) as port, provider_for(f"smtp://127.0.0.1:{port}?tls=none", pool_size=2) as p:
        results = await p.send_batch([message(i) for i in range(count)], on_result=on_result)
    assert all(r.ok for r in results) and len(sink.recipients()) == count
    assert len(reported) >= 2
    assert all(len(ids) >= REPORT_EVERY for ids, _ in reported)
    # Groups come as replies arrive, while later messages are still to go out, and each result once.
    assert reported[0][1] < count
    flat = [i for ids, _ in reported for i in ids]
    assert len(flat) == len(set(flat)) and set(flat) < {r.delivery_id for r in results}
    # The results a group reported are the batch's own final ones.
    by_id = {r.delivery_id: r for r in results}
    assert all(by_id[i].ok for i in flat)


async def test_a_failing_result_hook_stops_the_reports_not_the_sending() -> None:
    sink = Sink()
    calls = 0

    async def broken(results: Sequence[SendResult]) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("ledger unavailable")

    count = 2 * REPORT_EVERY + 3
    async with smtp_server(sink) as port, provider_for(f"smtp://127.0.0.1:{port}?tls=none", pool_size=2) as p:
        results = await p.send_batch([message(i) for i in range(count)], on_result=broken)
    # The caller gets every result back, to record the ones no report took.
    assert calls == 1
    assert [r.delivery_id for r in results] == [f"d{i}" for i in range(count)]
    assert all(r.ok for r in results) and len(sink.recipients()) == count
