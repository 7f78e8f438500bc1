"""A flow's WEBHOOK step: a POST to the user's URL, signed the Standard Webhooks way, retried with backoff.

Each flow signs with a secret of its own, derived from the instance's secret key (``flow_webhook_secret``; the
API shows it to admins as ``Flow.webhookSecret``), so nothing secret is stored. The ``webhook-id`` is the
ledger row's, the same on every attempt: a worker that dies between the answer and its record makes the next
worker POST again, and the receiver recognises the repeat by its id (Standard Webhooks deliver at least
once). The connection goes through the outgoing webhooks' guarded client, which resolves and checks the
destination at every connection.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update

from emailkit.db.engine import Database
from emailkit.db.tables.automation import FlowStepRun, FlowStepRunStatus
from emailkit.db.types import utcnow
from emailkit.domain.automation import runs as run_rows
from emailkit.domain.automation.config import FlowConfig
from emailkit.domain.automation.counters import Tally
from emailkit.domain.automation.definition import Step
from emailkit.domain.automation.runs import Finish, Held, Run
from emailkit.domain.sending.pipeline import backoff
from emailkit.domain.webhooks_out import signing
from emailkit.domain.webhooks_out.delivery import Answer, WebhookPoster
from emailkit.domain.webhooks_out.destinations import InvalidUrl, parse_url
from emailkit.domain.webhooks_out.sealing import PREFIX

# POSTs in flight at once for one group of runs.
CONCURRENCY = 16
EVENT_TYPE = "flow.step"


def _key(secret_key: str, flow_id: int) -> bytes:
    return hmac.new(
        secret_key.encode(), f"emailkit flow webhooks {flow_id}".encode(), hashlib.sha256
    ).digest()


def flow_webhook_secret(secret_key: str, flow_id: int) -> str:
    """The ``whsec_`` secret a flow's WEBHOOK steps sign with."""
    return PREFIX + base64.b64encode(_key(secret_key, flow_id)).decode()


def _body(run: Run, step: Step, now: datetime) -> bytes:
    person = run.person
    payload: dict[str, Any] = {
        "type": EVENT_TYPE,
        "timestamp": now.isoformat(),
        "data": {
            "flow": {"id": run.flow_id, "name": run.flow_name, "step": step.key},
            "run": {"id": run.id, "visit": run.visit},
            "subscriber": None
            if person is None
            else {
                "id": person.id,
                "email": person.email,
                "name": person.name,
                "attributes": person.attributes,
            },
            "event": (run.context or {}).get("event"),
        },
    }
    return json.dumps(payload, separators=(",", ":"), default=str).encode()


def _transient(answer: Answer) -> bool:
    return answer.status is None or answer.status in (408, 429) or answer.status >= 500


async def run_webhooks(
    db: Database,
    held: Held,
    step: Step,
    group: list[Run],
    config: FlowConfig,
    tally: Tally,
    poster: WebhookPoster,
    secret_key: str,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    now = clock()
    async with db.transaction() as s:
        ledger = await run_rows.start_steps(s, held, group, tally, now)
        await tally.write(s, held.workspace_id)
    try:
        target = parse_url(step.url or "")
    except InvalidUrl as exc:
        answers = [Answer(None, 0, f"invalid URL: {exc}") for _ in group]
    else:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def post(r: Run) -> Answer:
            async with gate:
                # When the POST is made, by the wall clock (a receiver checks it against its own).
                sent = utcnow()
                body = _body(r, step, sent)
                stamp = int(sent.timestamp())
                headers = [
                    ("content-type", "application/json"),
                    *signing.headers(_key(secret_key, r.flow_id), f"flowstep_{ledger[r.id].id}", stamp, body),
                ]
                return await poster.post(target, body, headers, time_limit=config.webhook_timeout_seconds)

        answers = list(await asyncio.gather(*(post(r) for r in group)))
    await _record(db, held, step, group, answers, ledger, config, tally, clock())


async def _record(
    db: Database,
    held: Held,
    step: Step,
    group: Sequence[Run],
    answers: Sequence[Answer],
    ledger: dict[int, run_rows.StepRow],
    config: FlowConfig,
    tally: Tally,
    now: datetime,
) -> None:
    finishes: list[Finish] = []
    retry: dict[int, datetime] = {}
    async with db.transaction() as s:
        for r, answer in zip(group, answers, strict=True):
            row = ledger[r.id]
            attempts = row.attempts + 1
            if answer.ok:
                finishes.append(
                    Finish(r, FlowStepRunStatus.DONE, f"HTTP {answer.status}", step.next, started=True)
                )
                continue
            said = answer.describe() or "failed"
            if _transient(answer) and attempts < config.webhook_attempts:
                retry[r.id] = now + timedelta(seconds=backoff(attempts, 5.0, 3600.0))
                await s.execute(
                    update(FlowStepRun)
                    .where(FlowStepRun.id == row.id)
                    .values(attempts=attempts, detail=f"attempt {attempts}: {said}"[:2000])
                )
                continue
            detail = f"failed after {attempts} attempt(s): {said}"[:2000]
            finishes.append(Finish(r, FlowStepRunStatus.FAILED, detail, step.next, started=True))
        await run_rows.settle(s, held, finishes, tally, now)
        if retry:
            await run_rows.park(s, held.claim, [r for r in group if r.id in retry], retry, waiting=False)
        await tally.write(s, held.workspace_id)
