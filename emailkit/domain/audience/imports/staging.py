"""The staging table of an import and the checks made on it as a set.

Parsed rows are staged first, then checked with a statement each rather than row by row: repeats of an
address within the file fail (naming the row that keeps it), suppressed and erased addresses are skipped. On
SQLite one connection stages every row (chunked executemany) into a temporary table and checks them all at
once; on PostgreSQL (see `postgres`) chunks arrive through COPY into an UNLOGGED table and are checked as they
come (`mark_duplicates_in`, `mark_suppressed` with a range). What failed or was skipped becomes the import's
report (`store_errors`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    cast,
    exists,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import SchemaItem

from emailkit.db.dialect import dialect_of
from emailkit.db.tables.audience import ImportRowError, Suppression
from emailkit.domain.audience.imports.rows import StagedRow
from emailkit.domain.audience.suppressions import email_hash

STAGING_NAME: Final = "emailkit_import_staging"
SQLITE_BATCH: Final = 2000
SUPPRESSED: Final = "suppressed"

COLUMNS: Final = ("row_no", "email", "name", "attributes", "error")


def staging_table(name: str, *, shared: bool) -> Table:
    """The staging table's definition under `name`.

    Kept off the application's metadata: it exists only while an import runs. A temporary table (SQLite, where
    one connection does everything) lives in the import's transaction; a `shared` one (PostgreSQL) is an
    UNLOGGED table that a second connection fills chunk by chunk while the import's transaction loads it."""
    columns: list[SchemaItem] = [
        # INTEGER PRIMARY KEY is SQLite's rowid, so row ranges cost nothing there; on PostgreSQL rows arrive in
        # order, which keeps this index cheap to build.
        Column(
            "row_no", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=False
        ),
        Column("email", String),
        Column("name", String, nullable=False),
        # JSON text as parsed; typed JSONB on PostgreSQL so it reaches subscribers unchanged.
        Column("attributes", Text().with_variant(JSONB(), "postgresql"), nullable=False),
        Column("error", Text),
        Column("skipped", Boolean, nullable=False, server_default=false()),
        Column("existing", Boolean, nullable=False, server_default=false()),
    ]
    if shared:
        # The duplicate check looks up each new row's address among the rows before it.
        # A hash index: only equality is asked, and it skips the collation-aware comparisons of a b-tree.
        index = Index(f"ix_{name}_email", "email", postgresql_using="hash")
        return Table(name, MetaData(), *columns, index, prefixes=["UNLOGGED"])
    return Table(name, MetaData(), *columns, prefixes=["TEMPORARY"], postgresql_on_commit="DROP")


STAGING = staging_table(STAGING_NAME, shared=False)

ProgressHook = Callable[[int], Awaitable[None]]


async def create_staging(conn: AsyncConnection, st: Table) -> None:
    await drop_staging(conn, st)
    await conn.run_sync(lambda sync: st.create(sync))


async def drop_staging(conn: AsyncConnection, st: Table) -> None:
    await conn.execute(text(f'DROP TABLE IF EXISTS "{st.name}"'))


async def copy_rows(conn: AsyncConnection, st: Table, rows: Sequence[StagedRow]) -> None:
    """PostgreSQL: one chunk of parsed rows into the staging table with COPY, in `conn`'s transaction."""
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    await driver.copy_records_to_table(st.name, records=rows, columns=list(COLUMNS))


async def insert_rows(
    conn: AsyncConnection, st: Table, rows: Iterable[StagedRow], every: int, hook: ProgressHook
) -> None:
    """Write every parsed row into the staging table, calling `hook(rows so far)` every `every` rows."""
    batch: list[dict[str, Any]] = []
    count = 0
    statement = insert(st)
    for row in rows:
        batch.append(dict(zip(COLUMNS, row, strict=True)))
        count += 1
        if len(batch) >= SQLITE_BATCH:
            await conn.execute(statement, batch)
            batch = []
        if count % every == 0:
            await hook(count)
    if batch:
        await conn.execute(statement, batch)


# --- checks -----------------------------------------------------------------------------------------------


def in_range(st: Table, lo: int | None, hi: int | None) -> ColumnElement[bool]:
    return st.c.row_no.between(lo, hi) if lo is not None and hi is not None else literal(True)


async def mark_duplicates(conn: AsyncConnection, st: Table) -> int:
    """Every repeat of an address within the file fails, naming the row that keeps it (whole table)."""
    firsts = (
        select(st.c.email, func.min(st.c.row_no).label("first_row"))
        .where(st.c.error.is_(None))
        .group_by(st.c.email)
        .having(func.count() > 1)
        .subquery("firsts")
    )
    result = await conn.execute(
        update(st)
        .values(error=literal("duplicate email: already in row ") + cast(firsts.c.first_row, String))
        .where(st.c.email == firsts.c.email, st.c.row_no > firsts.c.first_row, st.c.error.is_(None))
    )
    return int(result.rowcount)


async def mark_duplicates_in(conn: AsyncConnection, st: Table, lo: int, hi: int) -> int:
    """As `mark_duplicates`, for rows lo..hi once every row before them is staged: each repeat is found through
    the email index among the rows staged so far (the first of an address is never a repeat, and a row failed
    for its address's format has none)."""
    earlier = st.alias("earlier")
    first_row = select(func.min(earlier.c.row_no)).where(earlier.c.email == st.c.email).scalar_subquery()
    repeated = exists().where(earlier.c.email == st.c.email, earlier.c.row_no < st.c.row_no)
    result = await conn.execute(
        update(st)
        .values(error=literal("duplicate email: already in row ") + cast(first_row, String))
        .where(st.c.row_no.between(lo, hi), st.c.error.is_(None), repeated)
    )
    return int(result.rowcount)


def _sha256_hex(conn: AsyncConnection, column: ColumnElement[Any]) -> ColumnElement[Any]:
    if dialect_of(conn) == "postgresql":
        return func.encode(func.sha256(func.convert_to(column, "UTF8")), "hex")
    return func.emailkit_sha256(column)


async def _register_sqlite_sha256(conn: AsyncConnection) -> None:
    raw = await conn.get_raw_connection()
    await conn.run_sync(
        lambda _: raw.dbapi_connection.create_function(  # type: ignore[union-attr]
            "emailkit_sha256",
            1,
            lambda value: email_hash(value) if value is not None else None,
            deterministic=True,
        )
    )


async def mark_suppressed(
    conn: AsyncConnection, st: Table, workspace_id: int, lo: int | None = None, hi: int | None = None
) -> int:
    """Rows whose address is suppressed in the workspace, or was erased there (only its hash is kept), are
    skipped. Another workspace's suppressions say nothing about this one's subscribers."""
    in_workspace = Suppression.workspace_id == workspace_id
    condition: ColumnElement[bool] = st.c.email.in_(
        select(Suppression.email).where(in_workspace, Suppression.email.is_not(None))
    )
    erased = select(Suppression.email_hash).where(in_workspace, Suppression.email.is_(None))
    if (await conn.execute(select(exists(erased)))).scalar():
        if dialect_of(conn) == "sqlite":
            await _register_sqlite_sha256(conn)
        condition = or_(condition, _sha256_hex(conn, st.c.email).in_(erased))
    result = await conn.execute(
        update(st)
        .values(error=SUPPRESSED, skipped=True)
        .where(in_range(st, lo, hi), st.c.error.is_(None), condition)
    )
    return int(result.rowcount)


async def row_range(conn: AsyncConnection, st: Table) -> tuple[int, int]:
    lo, hi = (await conn.execute(select(func.min(st.c.row_no), func.max(st.c.row_no)))).one()
    return (int(lo), int(hi)) if lo is not None else (0, -1)


async def store_errors(
    conn: AsyncConnection, st: Table, import_id: int, workspace_id: int, limit: int
) -> None:
    """Keep the first `limit` failed or skipped rows, in row order, as the import's report (rows of the
    import's workspace: an INSERT ... SELECT takes no column default)."""
    await conn.execute(
        insert(ImportRowError).from_select(
            ["import_id", "workspace_id", "row", "message"],
            select(literal(import_id), literal(workspace_id, BigInteger()), st.c.row_no, st.c.error)
            .where(st.c.error.is_not(None))
            .order_by(st.c.row_no)
            .limit(limit),
        )
    )
