"""What an HTTP provider commits, sends and reports, in the order it happened, checked against the exactly-once
rule: a message is committed before its request goes out, and at no moment are more requests' messages
committed and unreported than the provider has requests in flight."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from emailkit.domain.ports.provider import SendResult


@dataclass
class HandoverLog:
    events: list[tuple[str, frozenset[str]]] = field(default_factory=list)

    async def on_commit(self, ids: Sequence[str]) -> None:
        self.events.append(("commit", frozenset(ids)))

    async def on_result(self, results: Sequence[SendResult]) -> None:
        self.events.append(("result", frozenset(r.delivery_id for r in results)))

    def request(self, ids: Iterable[str]) -> None:
        self.events.append(("request", frozenset(ids)))

    def check(self, *, all_ids: set[str], most_in_doubt: int) -> int:
        """Replay the log; returns the largest number of committed-but-unreported messages seen."""
        committed: set[str] = set()
        reported: set[str] = set()
        worst = 0
        for kind, ids in self.events:
            if kind == "commit":
                assert not ids & reported, f"{sorted(ids & reported)} committed again after their result"
                committed |= ids
            elif kind == "request":
                assert ids <= committed, f"{sorted(ids - committed)} sent before they were committed"
                assert not ids & reported
            else:
                assert ids <= committed, f"{sorted(ids - committed)} reported but never committed"
                reported |= ids
            worst = max(worst, len(committed - reported))
        assert worst <= most_in_doubt, f"{worst} messages committed and unreported at once"
        assert committed == reported == all_ids
        return worst
