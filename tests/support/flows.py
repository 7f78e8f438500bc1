"""Flows driven by hand: the ticker's claims at a chosen instant, and the claim jobs run in this process."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces, workspace_scope
from emailkit.db.tables.audience import Subscriber
from emailkit.db.tables.automation import FlowRun, FlowStepRun
from emailkit.db.tables.content import ContentFormat, Template, TemplateKind
from emailkit.db.types import utcnow
from emailkit.domain.automation import claims, flows
from emailkit.domain.automation.config import FlowConfig
from emailkit.domain.automation.runner import FlowRunner
from emailkit.domain.automation.send_step import StepSender
from emailkit.domain.content.tracked_urls import TrackingUrls
from emailkit.domain.runtime import Runtime
from emailkit.domain.sending.messages import MessageBuilder
from emailkit.domain.tokens import TokenSigner
from tests.integration.test_scheduler import RecordingQueue
from tests.support.ab import KeepingProvider
from tests.support.environment import TEST_SECRET

FROM = "news@example.com"


async def make_template(
    db: Database,
    body: str,
    subject: str = "Hello {{ subscriber.name }}",
    kind: TemplateKind = TemplateKind.CAMPAIGN,
) -> int:
    async with db.transaction() as s:
        row = Template(
            name=f"t-{body[:20]}", kind=kind, subject=subject, body=body, format=ContentFormat.HTML
        )
        s.add(row)
        await s.flush()
        return row.id


def send(key: str, template_id: int, nxt: str | None = None, **more: Any) -> dict[str, Any]:
    return {"key": key, "type": "SEND", "templateId": template_id, "fromEmail": FROM, "next": nxt, **more}


def wait(key: str, seconds: int, nxt: str | None = None) -> dict[str, Any]:
    return {"key": key, "type": "WAIT", "waitSeconds": seconds, "next": nxt}


async def make_flow(
    db: Database,
    definition: Mapping[str, Any],
    *,
    publish: bool = True,
    name: str = "Flow",
    allow_private: bool = False,
) -> int:
    async with db.transaction() as s:
        row = await flows.create_flow(
            s, flows.FlowInput(name=name, definition=definition), allow_private=allow_private
        )
        if publish:
            await flows.publish_flow(s, row.id, allow_private=allow_private)
        return row.id


@dataclass
class FlowWorld:
    db: Database
    provider: KeepingProvider = field(default_factory=KeepingProvider)
    queue: RecordingQueue = field(default_factory=RecordingQueue)
    config: FlowConfig = field(default_factory=FlowConfig)
    runner: FlowRunner = field(init=False)
    runtime: Runtime = field(init=False)
    webhook_poster: Any = None
    # The instant the flows see as now: the wall clock, or the instant a tick was asked for.
    at: datetime | None = None

    def __post_init__(self) -> None:
        urls = TrackingUrls("https://mail.example.com", TokenSigner(TEST_SECRET))
        sender = StepSender(self.db, self.provider, "keeping", MessageBuilder(urls))
        poster = (lambda: self.webhook_poster) if self.webhook_poster is not None else None
        self.runner = FlowRunner(
            self.db, secret_key=TEST_SECRET, config=self.config, sender=sender, poster=poster, clock=self.now
        )
        self.runtime = Runtime(
            db=self.db, secret_key=TEST_SECRET, public_url="http://testserver", jobs=self.queue
        )

    async def tick(self, at: datetime | None = None) -> int:
        """One tick at `at` (default now): claim what is due then, and run the claims' jobs here; returns the
        runs the jobs took."""
        self.at = at
        with all_workspaces():
            made = await claims.dispatch_due_runs(self.runtime, self.now(), hold=self.config.hold_seconds)
        self.queue.jobs.clear()
        moved = 0
        for c in made:
            with workspace_scope(c.workspace_id):
                moved += (await self.runner.advance(c.workspace_id, c.claim)).runs
        return moved

    async def settle(self, at: datetime | None = None, *, ticks: int = 10) -> None:
        """Tick until nothing is due at `at`."""
        for _ in range(ticks):
            if not await self.tick(at):
                return
        raise AssertionError(f"runs still due after {ticks} ticks")

    def now(self) -> datetime:
        return self.at or utcnow()

    def later(self, seconds: float) -> datetime:
        return utcnow() + timedelta(seconds=seconds)

    def sent_to(self) -> dict[str, list[str]]:
        return self.provider.subjects_by_recipient()


async def runs_of(db: Database, flow_id: int) -> list[FlowRun]:
    async with db.session() as s:
        return list(
            (
                await s.execute(select(FlowRun).where(FlowRun.flow_id == flow_id).order_by(FlowRun.id))
            ).scalars()
        )


async def ledger_of(db: Database, run_id: int) -> list[tuple[str, int, str]]:
    async with db.session() as s:
        rows = (
            await s.execute(
                select(FlowStepRun).where(FlowStepRun.run_id == run_id).order_by(FlowStepRun.visit)
            )
        ).scalars()
        return [(r.step_key, r.visit, r.status.value) for r in rows]


async def subscriber_ids(db: Database, emails: Sequence[str]) -> list[int]:
    async with db.session() as s:
        return list(
            (
                await s.execute(
                    select(Subscriber.id).where(Subscriber.email.in_(emails)).order_by(Subscriber.id)
                )
            ).scalars()
        )
