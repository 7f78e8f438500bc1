"""The live counters of flows and of their steps, added up while a transaction works and written once at its
end (never COUNT(*) over runs or the ledger on a hot path)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.dialect import upsert
from emailkit.db.tables.automation import Flow, FlowStepStats

FlowCounter = Literal["active", "completed", "exited"]
StepCounter = Literal["entered", "completed", "sent", "skipped", "failed", "opened", "clicked"]
STEP_COUNTERS: tuple[StepCounter, ...] = (
    "entered",
    "completed",
    "sent",
    "skipped",
    "failed",
    "opened",
    "clicked",
)


@dataclass
class Tally:
    flows: Counter[tuple[int, FlowCounter]] = field(default_factory=Counter)
    steps: Counter[tuple[int, str, StepCounter]] = field(default_factory=Counter)
    # Flows whose counts were written: `write` starts the counts again from zero, and the runner announces
    # every flow it changed once it is done (flowStats), not only those of its last round.
    written: set[int] = field(default_factory=set)

    def flow(self, flow_id: int, name: FlowCounter, n: int = 1) -> None:
        self.flows[(flow_id, name)] += n

    def step(self, flow_id: int, key: str, name: StepCounter, n: int = 1) -> None:
        self.steps[(flow_id, key, name)] += n

    def finished(self, flow_id: int, exited: bool, n: int = 1) -> None:
        """`n` runs left the flow: completed, or exited early."""
        self.flow(flow_id, "exited" if exited else "completed", n)
        self.flow(flow_id, "active", -n)

    @property
    def flow_ids(self) -> set[int]:
        return self.written | {f for f, _ in self.flows} | {f for f, _, _ in self.steps}

    async def write(self, session: AsyncSession, workspace_id: int) -> None:
        """Add the counts to the rows, in the caller's transaction, and start again from zero."""
        per_flow: dict[int, dict[str, int]] = {}
        for (flow_id, name), n in self.flows.items():
            if n:
                per_flow.setdefault(flow_id, {})[name] = n
        for flow_id, counts in sorted(per_flow.items()):
            column = Flow.__table__.c
            await session.execute(
                update(Flow)
                .where(Flow.id == flow_id)
                .values({name: column[name] + n for name, n in counts.items()})
            )
        per_step: dict[tuple[int, str], dict[str, int]] = {}
        for (flow_id, key, step_name), n in self.steps.items():
            if n:
                per_step.setdefault((flow_id, key), {})[step_name] = n
        for (flow_id, key), counts in sorted(per_step.items()):
            await _bump_step(session, workspace_id, flow_id, key, counts)
        self.written |= set(per_flow) | {f for f, _ in per_step}
        self.flows.clear()
        self.steps.clear()


async def _bump_step(
    session: AsyncSession, workspace_id: int, flow_id: int, key: str, counts: dict[str, int]
) -> None:
    values = {name: counts.get(name, 0) for name in STEP_COUNTERS}
    table = FlowStepStats.__table__
    stmt = upsert(session)(table).values(flow_id=flow_id, step_key=key, workspace_id=workspace_id, **values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.flow_id, table.c.step_key],
        set_={name: table.c[name] + stmt.excluded[name] for name in counts},
    )
    await session.execute(stmt)
