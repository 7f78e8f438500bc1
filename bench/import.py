"""CSV import on PostgreSQL: time and peak memory for a generated file (prints figures; not a test).

Generates a CSV of N subscribers (email, name and five attribute columns, ~56 bytes a row) into a temporary
file, then imports it into an emptied database the two ways the product does:

* local: the file read directly, as `emailkit import FILE` does;
* upload: the file stored in the database in 1 MiB chunks (what importSubscribers does with an upload),
  then the background job reading it back;
* again (not by default): the same file imported a second time, so every row updates a known subscriber.

Each run reports when the whole file had been parsed and staged (on PostgreSQL the load of the chunks
already staged runs alongside, so most of the load is done by then) and the peak RSS of this process during
the run, sampled at every progress report. Runs at two sizes show that memory does not
grow with the file.

    python bench/import.py --url postgresql://postgres@127.0.0.1:5432/bench [--rows 1000000] [--small 200000]

The database's schema is DROPPED and re-created: point it at a scratch database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from benchlib import in_default_workspace
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from emailkit import migrate
from emailkit.db.engine import Database
from emailkit.db.tables.audience import Import
from emailkit.domain.audience import lists
from emailkit.domain.audience.imports import service as imports
from emailkit.domain.audience.imports.csvfile import SAMPLE_BYTES
from emailkit.domain.audience.imports.progress import ImportState
from emailkit.domain.audience.imports.service import ImportRequest

CITIES = ("Berlin", "Paris", "London", "Madrid", "Rome", "Wien", "Zürich", "København")
PLANS = ("free", "pro", "team")


def generate(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("email,name,city,age,vip,plan,signup\n")
        for i in range(rows):
            out.write(
                f"user{i}@example{i % 997}.com,User {i},{CITIES[i % 8]},{18 + i % 60},"
                f"{'true' if i % 3 == 0 else 'false'},{PLANS[i % 3]},2024-{1 + i % 12:02d}-{1 + i % 28:02d}\n"
            )


def generate_wide(path: Path, rows: int) -> None:
    """Rows of about 4 KB (two long text columns): memory must not follow the row width either."""
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("email,name,notes,bio\n")
        for i in range(rows):
            out.write(f"w{i}@example.com,W {i},{'n' * 2000}{i},{'b' * 2000}{i}\n")


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


@dataclass
class Probe:
    started: float = field(default_factory=time.perf_counter)
    peak_rss: float = 0.0
    loading_at: float | None = None

    async def __call__(self, state: ImportState) -> None:
        self.peak_rss = max(self.peak_rss, rss_mib())
        if state.phase == "loading" and self.loading_at is None:
            self.loading_at = time.perf_counter()


async def reset(url: str, admin_url: str | None = None) -> Database:
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await migrate.upgrade(db)
    async with db.transaction() as s:
        await lists.create_list(s, lists.ListInput(name="Bench"))
    await checkpoint(db, admin_url)
    return db


async def file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while block := source.read(imports.CHUNK_BYTES):
            yield block


async def checkpoint(db: Database, admin_url: str | None = None) -> None:
    # Start each run with no dirty pages left by the previous one (its ~1 GB of WAL would otherwise be
    # checkpointed during this run). Needs superuser or pg_checkpoint (the role emailkit runs as has neither:
    # ADMIN_URL, when given, is a superuser's connection for it); without them runs are just noisier.
    if admin_url is not None:
        admin = await asyncpg.connect(admin_url.replace("postgresql+asyncpg://", "postgresql://", 1))
        try:
            await admin.execute("CHECKPOINT")
        finally:
            await admin.close()
        return
    try:
        async with db.engine.connect() as conn:
            await conn.execute(text("CHECKPOINT"))
    except DBAPIError as exc:
        print(f"  (no CHECKPOINT before the run: {exc.orig})")


async def import_file(db: Database, path: Path, size: int, how: str) -> tuple[Import, Probe, float]:
    """One import of `path` (`how`: upload, or local), with its progress probe and the upload's storing time."""
    request = ImportRequest(path.name, [1])
    t0 = time.perf_counter()
    async with db.transaction() as s:
        if how == "upload":
            row = await imports.create_import(s, request, file_chunks(path))
        else:
            with path.open("rb") as source:
                sample = source.read(SAMPLE_BYTES)
            row = await imports.create_local_import(s, request, sample, size)
    stored = time.perf_counter() - t0
    probe = Probe()
    if how == "upload":
        result = await imports.run_import(db, row.id, on_progress=probe)
    else:
        with path.open("rb") as source:
            result = await imports.run_import(db, row.id, source=source, on_progress=probe)
    assert isinstance(result, Import)
    return result, probe, stored


async def run_once(url: str, path: Path, size: int, rows: int, how: str, admin_url: str | None) -> None:
    """`how`: local or upload into an empty database; again: a second local import of the same file, every
    row then an update of a known subscriber."""
    db = await reset(url, admin_url)
    try:
        if how == "again":
            await import_file(db, path, size, "local")
            await checkpoint(db, admin_url)
        before = rss_mib()
        result, probe, stored = await import_file(db, path, size, "local" if how == "again" else how)
        done = time.perf_counter()
        changed = result.updated if how == "again" else result.inserted
        if changed != rows:
            raise SystemExit(
                f"unexpected result: {result.status} {result.error} {result.inserted=} {result.updated=}"
            )
        loading = (probe.loading_at or done) - probe.started
        total = done - probe.started + (stored if how == "upload" else 0.0)
        print(
            f"  {how:6} {rows:>9,} rows: total {total:6.2f} s ({rows / total:>9,.0f} rows/s)"
            + (f"  [store upload {stored:5.2f} s]" if how == "upload" else "")
            + f"  whole file parsed and staged at {loading:6.2f} s (the load runs alongside)"
            + f"  RSS before {before:6.1f} MiB, peak {probe.peak_rss:6.1f} MiB"
        )
    finally:
        await db.dispose()


@in_default_workspace
async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="postgresql+asyncpg:// URL of a scratch database")
    parser.add_argument(
        "--admin-url",
        help="a superuser's URL of the same database, for the CHECKPOINT before each run "
        "(when --url names a role that may not run it)",
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=200_000, help="a second, smaller size (0 to skip)")
    parser.add_argument(
        "--ways",
        default="local,upload",
        help="local, upload, again (a re-import: every row an update), comma-separated",
    )
    parser.add_argument(
        "--wide", type=int, default=0, help="also import this many rows of ~4 KB each (local)"
    )
    args = parser.parse_args()
    url = args.url.replace("postgresql://", "postgresql+asyncpg://", 1)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        for rows in [r for r in (args.small, args.rows) if r]:
            path = Path(tmp) / f"subscribers-{rows}.csv"
            t0 = time.perf_counter()
            generate(path, rows)
            size = path.stat().st_size
            print(f"{rows:,} rows, {size / (1 << 20):.1f} MiB generated in {time.perf_counter() - t0:.1f} s")
            for how in args.ways.split(","):
                await run_once(url, path, size, rows, how.strip(), args.admin_url)
            path.unlink()
        if args.wide:
            path = Path(tmp) / "wide.csv"
            generate_wide(path, args.wide)
            print(f"{args.wide:,} wide rows, {path.stat().st_size / (1 << 20):.1f} MiB generated")
            await run_once(url, path, path.stat().st_size, args.wide, "local", args.admin_url)
    print(
        f"peak RSS of the whole process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB"
    )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    asyncio.run(main())
