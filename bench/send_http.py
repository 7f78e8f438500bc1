"""A personalised campaign through each HTTP API provider (SendGrid, Mailgun, Postmark, Resend, Brevo, Amazon
SES v2) into a minimal local peer of that API, batched (each API's per-recipient mechanism) and one message per
request. Brevo and SES have no batched path (see their provider modules): they run one message per request
only, SES with its whole MIME message built here and every request SigV4-signed, as in production.

Prints figures (not a test). No database: the worker side here is what the send pipeline does per chunk
between reading the ledger and recording results, i.e. render every recipient's message with the real
``MessageBuilder`` (bench/send.py's MJML newsletter: 5 tracked links, an open pixel, unsubscribe and web
view links, Jinja on the name, city and plan) and hand the chunk to the provider, ``on_commit`` and
``on_result`` included (as no-ops). The chunk is what the pipeline uses for that provider
(``SendingConfig.chunk_for``).

    PYTHONPATH=. python bench/send_http.py [--emails 100000] [--providers sendgrid,mailgun,...]
                                           [--modes batched,single] [--concurrency 10]

Each provider's peer runs in a process of its own (uvicorn, no access log), so it does not share the
worker's CPU; it does the least an answer needs: it counts the recipients of each request by a byte marker
and answers with the API's success shape. Per run it prints requests/s and emails/s (wall clock from the
first render to the last answer), and the worker's CPU per email: rendering, and the provider's hand-over
(building the request bodies, factoring the content for batching, httpx).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from benchlib import free_port, process_cpu, wait_for_quiet
from botocore.credentials import Credentials
from send_data import CITIES, FIRST_NAMES, NEWSLETTER, PUBLIC_URL, SUBJECT

from emailkit.db.tables.content import ContentFormat
from emailkit.domain.content.rendering import compile_content
from emailkit.domain.content.tracked_urls import TrackingUrls
from emailkit.domain.ports.provider import Address, EmailProvider, OutgoingMessage, SendResult
from emailkit.domain.sending.config import SendingConfig
from emailkit.domain.sending.ledger import Pending
from emailkit.domain.sending.messages import Compiled, MessageBuilder
from emailkit.domain.tokens import TokenSigner
from emailkit.providers.brevo import BrevoProvider
from emailkit.providers.mailgun import MailgunProvider
from emailkit.providers.postmark import PostmarkProvider
from emailkit.providers.resend import ResendProvider
from emailkit.providers.sendgrid import SendGridProvider
from emailkit.providers.ses import SesProvider

PROVIDERS = ("sendgrid", "mailgun", "postmark", "resend", "brevo", "ses")
# Providers with one message per request only: their batched mode is not run.
UNBATCHED = ("brevo", "ses")
# What in a request body marks one recipient, per API (a byte count: the peer must stay cheap).
MARKERS = {
    "sendgrid": b'"custom_args"',
    "mailgun": b'name="to"',
    "postmark": b'"MessageStream"',
    "resend": b'"tags"',
    "brevo": b'"sender"',
    "ses": b'"Destination"',
}


# -- the peer -------------------------------------------------------------------------------------------


def peer_app(name: str) -> Callable[..., Awaitable[None]]:
    stats = {"requests": 0, "emails": 0}
    marker = MARKERS[name]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        status, headers, answer = 200, [(b"content-type", b"application/json")], b""
        if scope["path"] == "/_stats":
            answer = json.dumps(stats).encode()
        elif scope["path"] == "/_reset":
            stats.update(requests=0, emails=0)
        else:
            count = body.count(marker)
            stats["requests"] += 1
            stats["emails"] += count
            status, answer = answer_for(name, count)
            if name == "sendgrid":
                headers.append((b"x-message-id", secrets.token_urlsafe(12).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


def answer_for(name: str, count: int) -> tuple[int, bytes]:
    token = secrets.token_hex(8)
    if name == "sendgrid":
        return 202, b""
    if name == "mailgun":
        return 200, json.dumps({"id": f"<{token}@mg.example.com>", "message": "Queued. Thank you."}).encode()
    if name == "postmark":
        items = [{"ErrorCode": 0, "Message": "OK", "MessageID": f"{token}-{i}"} for i in range(count)]
        return 200, json.dumps(items).encode()
    if name == "resend":
        return 200, json.dumps({"data": [{"id": f"{token}-{i}"} for i in range(count)]}).encode()
    if name == "ses":
        return 200, json.dumps({"MessageId": f"0100{token}-bench-000000"}).encode()
    return 201, json.dumps({"messageId": f"<{token}@smtp-relay.mailin.fr>"}).encode()


def serve_peer(name: str, port: int) -> None:
    import uvicorn

    uvicorn.run(peer_app(name), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- the worker side ------------------------------------------------------------------------------------


def build_provider(name: str, url: str, *, batch: bool, concurrency: int) -> EmailProvider:
    if name == "sendgrid":
        return SendGridProvider(api_key="SG.bench", base_url=url, concurrency=concurrency, batch=batch)
    if name == "mailgun":
        return MailgunProvider(
            api_key="key-bench", domain="mg.example.com", base_url=url, concurrency=concurrency, batch=batch
        )
    if name == "postmark":
        return PostmarkProvider(server_token="bench", base_url=url, concurrency=concurrency, batch=batch)
    if name == "resend":
        return ResendProvider(api_key="re_bench", base_url=url, concurrency=concurrency, batch=batch)
    if name == "ses":
        credentials = Credentials("AKIABENCHBENCHBENCH0", "bench-secret-key")
        return SesProvider(
            region="us-east-1", credentials=credentials, endpoint_url=url, concurrency=concurrency
        )
    return BrevoProvider(api_key="xkeysib-bench", base_url=url, concurrency=concurrency)


def compiled() -> Compiled:
    content = compile_content(NEWSLETTER, ContentFormat.MJML, subject=SUBJECT)
    return Compiled(
        updated_at=datetime(2026, 12, 1, tzinfo=UTC),
        content=content,
        campaign={"id": 1, "name": "Weekly digest", "subject": SUBJECT},
        from_=Address("news@news.example.com", "Example News"),
        reply_to=None,
        track_opens=True,
        track_clicks=True,
        list_id_header='"Weekly digest" <campaign-1.news.example.com>',
        tracked=content.tracked(clicks=True, opens=True),
        web_view=False,
    )


def recipients(n: int) -> list[Pending]:
    rng = random.Random(7)
    people = []
    for i in range(1, n + 1):
        first = FIRST_NAMES[i % len(FIRST_NAMES)]
        attributes = {
            "first_name": first,
            "city": rng.choice(CITIES),
            "plan": "pro" if i % 4 == 0 else "free",
            "points": rng.randrange(1000),
        }
        people.append(Pending(i, i, f"reader{i}@example.org", f"{first} Reader{i}", attributes, 0))
    return people


@dataclass
class Run:
    provider: str
    mode: str
    emails: int
    requests: int
    wall: float
    render_cpu: float
    send_cpu: float
    peer_cpu: float
    failed: int


async def _noop_commit(ids: Sequence[str]) -> None:
    return None


async def _noop_result(results: Sequence[SendResult]) -> None:
    return None


async def run_one(
    name: str, url: str, peer_pid: int, people: list[Pending], *, batch: bool, concurrency: int
) -> Run:
    builder = MessageBuilder(TrackingUrls(PUBLIC_URL, TokenSigner("bench-secret-0123456789abcdef")))
    c = compiled()
    provider = build_provider(name, url, batch=batch, concurrency=concurrency)
    chunk = SendingConfig().chunk_for(provider.max_batch_size)
    step = provider.max_batch_size
    async with httpx.AsyncClient() as client:
        await client.post(f"{url}/_reset")
    render_cpu = send_cpu = 0.0
    failed = 0
    errors: dict[str, str] = {}
    peer_before = process_cpu(peer_pid)
    start = time.perf_counter()
    try:
        for first in range(0, len(people), chunk):
            t0 = time.process_time()
            messages: list[OutgoingMessage] = [builder.build(c, p) for p in people[first : first + chunk]]
            t1 = time.process_time()
            render_cpu += t1 - t0
            for at in range(0, len(messages), step):
                results = await provider.send_batch(
                    messages[at : at + step], on_commit=_noop_commit, on_result=_noop_result
                )
                for r in results:
                    if not r.ok:
                        failed += 1
                        # What went wrong, once per kind of error (the pipeline would retry a transient one).
                        errors.setdefault(
                            f"{'transient' if r.transient else 'permanent'}: {r.error}", r.delivery_id
                        )
            send_cpu += time.process_time() - t1
    finally:
        await provider.close()
    wall = time.perf_counter() - start
    for error in errors:
        print(f"  {name} {'batched' if batch else 'single'}: failed ({error})", file=sys.stderr, flush=True)
    peer_cpu = process_cpu(peer_pid) - peer_before
    async with httpx.AsyncClient() as client:
        stats = (await client.get(f"{url}/_stats")).json()
    return Run(
        name,
        "batched" if batch else "single",
        stats["emails"],
        stats["requests"],
        wall,
        render_cpu,
        send_cpu,
        peer_cpu,
        failed,
    )


def start_peer(name: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, __file__, "--serve", name, "--port", str(port)], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=1) as client:  # one client: each new one loads the CA bundle again (0.2 s)
        while True:
            try:
                client.get(f"{url}/_stats")
                return proc, url
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    proc.kill()
                    raise RuntimeError(f"{name} peer did not start") from None
                time.sleep(0.1)


def report(run: Run) -> None:
    n = max(run.emails, 1)
    print(
        f"| {run.provider} | {run.mode} | {run.emails} | {run.requests} | {run.requests / run.wall:,.0f} | "
        f"{run.emails / run.wall:,.0f} | {run.render_cpu / n * 1e6:,.0f} | {run.send_cpu / n * 1e6:,.0f} | "
        f"{(run.render_cpu + run.send_cpu) / n * 1e6:,.0f} | {run.peer_cpu / n * 1e6:,.0f} | {run.failed} |",
        flush=True,
    )


async def main(args: argparse.Namespace) -> None:
    people = recipients(args.emails)
    print(f"{args.emails} personalised emails per run; {wait_for_quiet(patience=args.patience)}", flush=True)
    print(
        "| provider | mode | emails | requests | requests/s | emails/s | render µs/email | "
        "hand-over µs/email | worker CPU µs/email | peer CPU µs/email | failed |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.providers.split(","):
        proc, url = start_peer(name)
        try:
            for mode in args.modes.split(","):
                if name in UNBATCHED and mode == "batched":
                    continue  # no batched path (see emailkit/providers/brevo.py and ses.py)
                report(
                    await run_one(
                        name, url, proc.pid, people, batch=mode == "batched", concurrency=args.concurrency
                    )
                )
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--emails", type=int, default=100_000)
    parser.add_argument("--providers", default=",".join(PROVIDERS))
    parser.add_argument("--modes", default="batched,single")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--patience", type=float, default=60.0, help="seconds to wait for a quieter machine")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.serve:
        serve_peer(parsed.serve, parsed.port)
    else:
        asyncio.run(main(parsed))
