"""The runner's tally remembers which flows it wrote counts for: it announces them (flowStats) once it is done,
after every round's write has started the counts again from zero."""

from __future__ import annotations

from emailkit.db.engine import Database
from emailkit.db.tables.tenancy import DEFAULT_WORKSPACE_ID
from emailkit.domain.automation.counters import Tally


async def test_flows_stay_named_after_their_counts_are_written(db: Database) -> None:
    tally = Tally()
    tally.flow(7, "completed")
    tally.flow(7, "active", -1)
    async with db.transaction() as s:
        await tally.write(s, DEFAULT_WORKSPACE_ID)
    assert not tally.flows
    tally.flow(9, "exited")
    assert tally.flow_ids == {7, 9}
