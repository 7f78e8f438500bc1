"""SMTP throughput of the smtp provider versus postfix's smtp-source, both into postfix's smtp-sink.

Prints messages/second and client CPU per message (prints figures; not a test). Needs the Debian package
postfix (smtp-sink, smtp-source); the postfix daemon itself is not used and may stay stopped.

    python bench/smtp.py [--messages 20000] [--sessions 10] [--size 20480] [--no-uvloop]

The provider's figure includes building each message (MIME assembly of a ~20 KB HTML body) and the
SMTP dialogue; smtp-source only streams a canned body. Both reuse sessions; smtp-source does not pipeline
(its man page says so), the provider pipelines when the sink offers PIPELINING (smtp-sink does).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from benchlib import find_tool, free_port

from emailkit.domain.ports.provider import Address, OutgoingMessage
from emailkit.providers.smtp import SmtpProvider, parse_smtp_url


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"smtp-sink did not start listening on {port}")


def start_sink(port: int) -> subprocess.Popen[bytes]:
    args = [find_tool("smtp-sink"), "-m", "1024"]
    if os.geteuid() == 0:
        args += ["-u", "nobody"]
    sink = subprocess.Popen([*args, f"127.0.0.1:{port}", "1024"], stdout=subprocess.DEVNULL)
    wait_listening(port)
    return sink


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_smtp_source(port: int, messages: int, sessions: int, size: int) -> tuple[float, float]:
    cpu_before = child_cpu()
    start = time.perf_counter()
    subprocess.run(
        [
            find_tool("smtp-source"),
            "-d",
            "-s",
            str(sessions),
            "-m",
            str(messages),
            "-l",
            str(size),
            "-f",
            "bounces@news.example.com",
            "-t",
            "user@example.org",
            f"127.0.0.1:{port}",
        ],
        check=True,
    )
    elapsed = time.perf_counter() - start
    return messages / elapsed, (child_cpu() - cpu_before) / messages * 1e6


def html_body(size: int) -> str:
    row = (
        '<tr><td style="padding:8px">Hello {i}, '
        '<a href="https://mail.example.com/c/{i}/tok">read more</a></td></tr>\n'
    )
    rows, total, i = [], 0, 0
    while total < size:
        line = row.format(i=i)
        rows.append(line)
        total += len(line)
        i += 1
    return "".join(rows)[:size]


def make_messages(count: int, size: int) -> list[OutgoingMessage]:
    html = html_body(size)
    return [
        OutgoingMessage(
            delivery_id=f"b{i}",
            sender="bounces@news.example.com",
            to=Address(f"user{i}@example.org", "Subscriber"),
            from_=Address("news@news.example.com", "Example News"),
            subject="Benchmark issue",
            html=html,
            headers={
                "List-Unsubscribe": f"<https://mail.example.com/u/{i}/AbCdEfGh>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        )
        for i in range(count)
    ]


async def run_provider(
    port: int, messages: Sequence[OutgoingMessage], sessions: int, pipelining: bool, batch: int
) -> tuple[float, float, int]:
    url = f"smtp://127.0.0.1:{port}?tls=none&helo=bench.example.com&pipelining={str(pipelining).lower()}"
    provider = SmtpProvider(parse_smtp_url(url), pool_size=sessions)
    batches = [messages[i : i + batch] for i in range(0, len(messages), batch)]
    failures = 0

    async def lane(lane_batches: list[Sequence[OutgoingMessage]]) -> None:
        nonlocal failures
        for chunk in lane_batches:
            failures += sum(not r.ok for r in await provider.send_batch(chunk))

    # Two batches in flight keep every pooled session busy while the other batch drains its tail.
    cpu_before = time.process_time()
    start = time.perf_counter()
    await asyncio.gather(lane(batches[0::2]), lane(batches[1::2]))
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_before
    await provider.close()
    return len(messages) / elapsed, cpu / len(messages) * 1e6, failures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--size", type=int, default=20_480, help="body bytes per message")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()

    if not args.no_uvloop:
        import uvloop

        uvloop.install()
    port = free_port()
    sink = start_sink(port)
    try:
        messages = make_messages(args.messages, args.size)
        print(
            f"{args.messages} messages of ~{args.size / 1024:.0f} KB, {args.sessions} sessions, "
            f"{os.cpu_count()} CPUs, {'asyncio' if args.no_uvloop else 'uvloop'}"
        )
        rate, cpu_us = run_smtp_source(port, args.messages, args.sessions, args.size)
        print(f"  postfix smtp-source            {rate:8.0f} msg/s   {cpu_us:6.0f} µs CPU/msg")
        for pipelining in (True, False):
            mine, mine_cpu, failures = asyncio.run(
                run_provider(port, messages, args.sessions, pipelining, args.batch)
            )
            label = "pipelined" if pipelining else "lock-step"
            print(
                f"  emailkit smtp provider ({label}) {mine:8.0f} msg/s   {mine_cpu:6.0f} µs CPU/msg"
                f"   {mine / rate:5.0%} of smtp-source   failures={failures}"
            )
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=10)


if __name__ == "__main__":
    main()
