"""CSV export on PostgreSQL: rows per second and peak memory (prints figures; not a test).

Exports every subscriber of the database (or a list, with --list-id) through the same code as
`GET /export/subscribers.csv`: the attribute-key discovery pass, then the keyset-paged stream. With
--http the export goes through the ASGI app and an HTTP client, as a user would download it. When the
database holds fewer than --rows subscribers, generated ones are imported first (bench/import.py's file).

    python bench/export.py --url postgresql://postgres@127.0.0.1:5432/bench [--rows 1000000] [--http]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import httpx
import uvicorn
from benchlib import free_port, in_default_workspace
from sqlalchemy import func, select

from emailkit import migrate
from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from emailkit.db.tables.audience import Subscriber
from emailkit.domain import apikeys
from emailkit.domain.audience import exports, lists
from emailkit.domain.audience.imports import service as imports
from emailkit.domain.audience.imports.csvfile import SAMPLE_BYTES
from emailkit.domain.runtime import Runtime
from emailkit.schema.relay import to_global_id
from emailkit.settings import Settings


def import_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_import", Path(__file__).with_name("import.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered first: its dataclasses look their module up while the class is built.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


async def ensure_rows(db: Database, rows: int) -> int:
    async with db.session() as s:
        have = int((await s.execute(select(func.count()).select_from(Subscriber))).scalar_one())
    if have >= rows:
        return have
    print(f"{have:,} subscribers in the database; importing {rows:,} generated ones first ...", flush=True)
    await migrate.upgrade(db)
    generator = import_bench()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "subscribers.csv"
        generator.generate(path, rows)
        size = path.stat().st_size
        with path.open("rb") as source:
            sample = source.read(SAMPLE_BYTES)
            source.seek(0)
            async with db.transaction() as s:
                await lists.create_list(s, lists.ListInput(name="Bench export"))
                row = await imports.create_local_import(s, imports.ImportRequest(path.name), sample, size)
            result = await imports.run_import(db, row.id, source=source)
    assert result is not None
    print(f"  imported: {result.status.value}, {result.inserted:,} inserted, {result.updated:,} updated")
    return have + result.inserted


async def direct(db: Database, selection: exports.Selection) -> tuple[int, int, float, float, float]:
    t0 = time.perf_counter()
    export = await exports.prepare_export(db, selection)
    discovered = time.perf_counter() - t0
    lines = size = 0
    peak = rss_mib()
    async for chunk in exports.csv_chunks(db, export):
        lines += chunk.count("\r\n")
        size += len(chunk.encode())
        peak = max(peak, rss_mib())
    return lines - 1, size, discovered, time.perf_counter() - t0, peak


async def over_http(db: Database, url: str, params: dict[str, str]) -> tuple[int, int, float, float, float]:
    """Download the export from a real uvicorn server (httpx's ASGI transport would buffer the body)."""
    async with db.transaction() as s:
        _, key = await apikeys.create_api_key(s, "bench-export", Role.VIEWER)
    secret = "bench-secret-0123456789"
    settings = Settings(database_url=url, secret_key=secret, public_url="http://bench")  # type: ignore[arg-type]
    app = create_app(settings, Runtime(db=db, secret_key=secret, public_url="http://bench"))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers only this flag
        await asyncio.sleep(0.05)
    lines = size = 0
    peak = rss_mib()
    first: float | None = None
    t0 = time.perf_counter()
    try:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=None) as client,
            client.stream(
                "GET", "/export/subscribers.csv", params=params, headers={"Authorization": f"Bearer {key}"}
            ) as resp,
        ):
            resp.raise_for_status()
            async for block in resp.aiter_bytes():
                if first is None:
                    first = time.perf_counter() - t0
                lines += block.count(b"\n")
                size += len(block)
                peak = max(peak, rss_mib())
    finally:
        server.should_exit = True
        await serving
    return lines - 1, size, first or 0.0, time.perf_counter() - t0, peak


@in_default_workspace
async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="postgresql+asyncpg:// URL")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--list-id", type=int, default=None)
    parser.add_argument("--http", action="store_true", help="also export through the HTTP route")
    args = parser.parse_args()
    url = args.url.replace("postgresql://", "postgresql+asyncpg://", 1)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    db = Database(url)
    try:
        await ensure_rows(db, args.rows)
        selection = exports.Selection(list_id=args.list_id)
        print(f"RSS before exporting: {rss_mib():.1f} MiB")
        rows, size, discovery, total, peak = await direct(db, selection)
        print(
            f"direct: {rows:,} rows, {size / (1 << 20):.1f} MiB in {total:.2f} s = {rows / total:,.0f} rows/s "
            f"(key discovery {discovery:.2f} s, streaming {rows / (total - discovery):,.0f} rows/s); "
            f"peak RSS {peak:.1f} MiB"
        )
        if args.http:
            params = {} if args.list_id is None else {"listId": to_global_id("MailingList", args.list_id)}
            rows, size, first, total, peak = await over_http(db, url, params)
            print(
                f"http:   {rows:,} rows, {size / (1 << 20):.1f} MiB in {total:.2f} s = {rows / total:,.0f} rows/s "
                f"(first byte after {first:.2f} s); peak RSS {peak:.1f} MiB"
            )
    finally:
        await db.dispose()
    print(
        f"peak RSS of the whole process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB"
    )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
