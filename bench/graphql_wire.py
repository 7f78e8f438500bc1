"""CPU per GraphQL request in process: a page of 50 subscribers (the fields a subscriber table shows) sent
straight into the ASGI app, with no socket and no HTTP client in the way, so what is timed is the server's
own work (routing, authentication, rate limit, parse, validation, cost, execution, JSON).

Prints figures (not a test). Indicative: run it on a quiet machine and compare runs of the same build.

    python bench/graphql_wire.py [--database-url postgresql://postgres@127.0.0.1:5432/ek] [--requests 500]
                                 [--subscribers 300] [--apq | --get] [--tiny] [--phases]
                                 [--profile profile.txt | --profile profile.pstats]

Without --database-url it uses a SQLite file in a temporary folder. The database named is wiped. --apq sends
the query by its hash (Automatic Persisted Queries) after registering it once, --get by hash over GET; --tiny
asks for `{ viewer { name } }` instead of the page (the cost every request pays); --phases prints the time
of each step of a request; --profile writes pyinstrument's report, or cProfile's stats for a .pstats name.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import in_default_workspace
from sqlalchemy import insert, text

from emailkit import migrate
from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from emailkit.db.tables.audience import MailingList, OptIn, Subscriber, Subscription, SubscriptionStatus
from emailkit.db.tables.base import Base
from emailkit.domain import apikeys
from emailkit.domain.runtime import Runtime
from emailkit.settings import Settings

SECRET = "bench-secret-key-0123456789abcdef"
TINY_QUERY = "query Me { viewer { name } }"
PAGE_QUERY = """
query SubscriberTable($first: Int!, $after: String) {
  subscribers(first: $first, after: $after) {
    edges {
      cursor
      node {
        id
        email
        name
        status
        createdAt
        attributes
        subscriptions { status list { id name } }
      }
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""


async def fresh_database(url: str | None, tmp: Path) -> Database:
    if url is None:
        db = Database(f"sqlite+aiosqlite:///{tmp / 'bench.db'}")
    else:
        db = Database(re.sub(r"^postgresql://", "postgresql+asyncpg://", url), pool_size=5)
        async with db.engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    await migrate.upgrade(db)
    assert Base.metadata.tables  # the models are loaded (and with them every table migrate created)
    return db


async def seed(db: Database, n: int) -> str:
    async with db.transaction() as s:
        lists = [MailingList(name=f"List {i}", optin=OptIn.SINGLE) for i in range(3)]
        s.add_all(lists)
        await s.flush()
        rows = [
            {
                "email": f"user{i:06d}@bench.test",
                "name": f"User {i}",
                "attributes": {
                    "city": "Berlin",
                    "plan": "pro",
                    "age": 20 + i % 50,
                    "vip": i % 7 == 0,
                    "n": i,
                },
            }
            for i in range(n)
        ]
        ids = (await s.execute(insert(Subscriber).returning(Subscriber.id), rows)).scalars().all()
        await s.execute(
            insert(Subscription),
            [
                {"subscriber_id": sid, "list_id": lst.id, "status": SubscriptionStatus.CONFIRMED}
                for sid in ids
                for lst in lists[: 1 + sid % 3]
            ],
        )
    async with db.transaction() as s:
        _, raw = await apikeys.create_api_key(s, "bench", Role.ADMIN)
    return raw


class Call:
    """One request through the ASGI app; the response body is collected, not decoded."""

    def __init__(self, app: Any, method: str, path: str, query: bytes, body: bytes, key: str) -> None:
        self.app = app
        headers = [(b"host", b"bench"), (b"authorization", f"Bearer {key}".encode())]
        if body:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        self.body = body

    async def __call__(self) -> tuple[int, bytes]:
        sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()
            sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(dict(self.scope), receive, send)
        return status, b"".join(chunks)


PHASES: dict[str, float] = {}


def time_phases() -> None:
    """Wrap the steps of a request with wall-clock timers (the run is sequential, so an async step's time is
    its own plus the database it waits for). Adds a few µs per step."""
    import functools

    import strawberry.schema.schema as strawberry_schema

    import emailkit.schema.cost as cost
    import emailkit.schema.documents as documents
    import emailkit.schema.error_policy as error_policy
    import emailkit.web.graphql as view
    from emailkit.web.ratelimit import ApiRateLimiter

    def wrap(owner: Any, name: str, label: str) -> None:
        fn = getattr(owner, name)
        if asyncio.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    PHASES[label] = PHASES.get(label, 0.0) + time.perf_counter() - start

            setattr(owner, name, timed_async)
        else:

            @functools.wraps(fn)
            def timed(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    PHASES[label] = PHASES.get(label, 0.0) + time.perf_counter() - start

            setattr(owner, name, timed)

    wrap(strawberry_schema, "parse", "parse (cache misses)")
    wrap(documents, "verdict", "validation incl. depth/alias rules (cache misses)")
    wrap(cost, "operation_cost", "cost analysis")
    wrap(error_policy.UnstorableTextGuard, "_first_problem", "unstorable-text check")
    wrap(view.GraphQLView, "_principal", "API key authentication")
    wrap(ApiRateLimiter, "check", "rate limiter")
    wrap(view.GraphQLView, "parse_http_body", "request body decoding")
    wrap(strawberry_schema.Schema, "_execute_operation", "execution (resolvers, DataLoaders, SQL)")
    wrap(view.GraphQLView, "create_response", "response encoding")
    wrap(view.GraphQLView, "__call__", "whole request (from the view)")


@in_default_workspace
async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--subscribers", type=int, default=300)
    parser.add_argument("--profile")
    parser.add_argument("--apq", action="store_true")
    parser.add_argument("--get", action="store_true", help="send the persisted query by GET (implies --apq)")
    parser.add_argument(
        "--tiny", action="store_true", help="ask for `{ viewer { name } }`: what every request costs"
    )
    parser.add_argument("--phases", action="store_true", help="also print the time of each step")
    args = parser.parse_args()
    if args.phases:
        time_phases()

    with tempfile.TemporaryDirectory() as tmp:
        db = await fresh_database(args.database_url, Path(tmp))
        key = await seed(db, args.subscribers)
        settings = Settings(
            database_url=db.url,
            secret_key=SECRET,  # type: ignore[arg-type]
            public_url="http://bench",
            # Counted as in production, with room for the run.
            api_rate_limit="100000/minute",
        )
        runtime = Runtime(db=db, secret_key=SECRET, public_url="http://bench", max_page_size=250)
        app = create_app(settings, runtime)
        query, variables = (TINY_QUERY, {}) if args.tiny else (PAGE_QUERY, {"first": 50})
        digest = hashlib.sha256(query.encode()).hexdigest()
        persisted = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
        body = json.dumps({"query": query, "variables": variables}).encode()
        call = Call(app, "POST", "/graphql", b"", body, key)
        if args.apq or args.get:
            status, body = await Call(
                app,
                "POST",
                "/graphql",
                b"",
                json.dumps({"query": query, "variables": variables, "extensions": persisted}).encode(),
                key,
            )()
            assert status == 200, body
            if args.get:
                from urllib.parse import urlencode

                qs = urlencode(
                    {"variables": json.dumps(variables), "extensions": json.dumps(persisted)}
                ).encode()
                call = Call(app, "GET", "/graphql", qs, b"", key)
            else:
                call = Call(
                    app,
                    "POST",
                    "/graphql",
                    b"",
                    json.dumps({"variables": variables, "extensions": persisted}).encode(),
                    key,
                )
        status, body = await call()
        decoded = json.loads(body)
        assert status == 200 and "errors" not in decoded, body[:500]
        assert args.tiny or len(decoded["data"]["subscribers"]["edges"]) == 50
        for _ in range(30):
            await call()
        gc.collect()
        gc.freeze()
        PHASES.clear()

        profiler = None
        if args.profile and args.profile.endswith(".pstats"):
            import cProfile

            cprof = cProfile.Profile()
            cprof.enable()
        elif args.profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0002, async_mode="disabled")
            profiler.start()
        samples: list[float] = []
        cpu_start = time.process_time()
        for _ in range(args.requests):
            t0 = time.perf_counter()
            await call()
            samples.append(time.perf_counter() - t0)
        cpu = time.process_time() - cpu_start
        if args.profile and args.profile.endswith(".pstats"):
            cprof.disable()
            cprof.dump_stats(args.profile)
        elif profiler is not None:
            profiler.stop()
            report = profiler.output_text(unicode=False, color=False, show_all=False)
            await asyncio.to_thread(Path(args.profile).write_text, report)
        await db.dispose()

    backend = "postgresql" if args.database_url else "sqlite"
    mode = ("APQ GET" if args.get else "APQ POST" if args.apq else "POST") + (" tiny" if args.tiny else "")
    print(
        f"{backend} {mode}: {args.requests} requests — "
        f"{cpu / args.requests * 1e6:.0f} µs CPU/request (this process, incl. the database driver), "
        f"wall median {statistics.median(samples) * 1e6:.0f} µs, "
        f"p90 {statistics.quantiles(samples, n=10)[-1] * 1e6:.0f} µs; {len(body)} bytes"
    )
    for label, seconds in sorted(PHASES.items(), key=lambda item: -item[1]):
        print(f"  {label:52s} {seconds / args.requests * 1e6:8.0f} µs/request")


if __name__ == "__main__":
    asyncio.run(main())
