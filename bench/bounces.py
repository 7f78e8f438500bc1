"""Per-message costs of bounce handling (prints figures; not a test).

What VERP adds to every message sent (its two addresses: the envelope sender and List-Unsubscribe's mailto:),
what the bounce server's RCPT check costs (no database), and reading one report of each shape from
tests/fixtures/bounces into events (the bounce server runs it in a thread per message).

    python bench/bounces.py [--n 20000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from emailkit.domain.tokens import TokenSigner
from emailkit.domain.verp import ReturnPaths
from emailkit.inbound.reports import events_from_message

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "bounces"
REPORTS = {
    "DSN (Postfix)": "postfix-sisimai-01.eml",
    "DSN (Outlook)": "outlook-sisimai-02.eml",
    "ARF (RFC 5965 example)": "rfc5965-extended-example.eml",
    "free text, flufl.bounce (qmail)": "qmail-sisimai-01.eml",
    "free text, flufl.bounce (Gmail)": "gmail-sisimai-01.eml",
    "not a report (all detectors run)": "not-a-bounce-sisimai-01.eml",
}


def per_call(fn: Callable[[], object], n: int) -> float:
    """Best of five runs, in µs per call."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    paths = ReturnPaths(TokenSigner("bench-secret-0123456789abcdef"), "bounces.example.com")
    address = paths.bounce(123_456_789)
    print(f"{'step':<45} {'µs':>9}")
    rows = [
        (
            "VERP: both addresses of one message",
            lambda: (paths.bounce(123_456_789), paths.unsubscribe(123_456_789)),
        ),
        ("RCPT check of a valid address", lambda: paths.read(address)),
        ("RCPT check of a stranger's address", lambda: paths.read("someone@example.org")),
    ]
    for label, fn in rows:
        print(f"{label:<45} {per_call(fn, args.n):>9.2f}")
    now = datetime.now(UTC)
    for label, name in REPORTS.items():
        raw = (FIXTURES / name).read_bytes()
        cost = per_call(
            lambda raw=raw: events_from_message(raw, now, delivery_id=1, recipient="x@y.z"), args.n // 20
        )
        print(f"{'read ' + label:<45} {cost:>9.0f}  ({len(raw) / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
