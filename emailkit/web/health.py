"""Liveness and readiness probes (unauthenticated, reveal nothing)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse

from emailkit.domain.runtime import Runtime

Handler = Callable[[Request], Awaitable[JSONResponse]]

# Orchestrators give up on a probe after a few seconds; a database that hangs (rather than refusing the
# connection) must still produce an answer before that.
READY_TIMEOUT = 3.0


def health_routes(runtime: Runtime, *, ready_timeout: float = READY_TIMEOUT) -> tuple[Handler, Handler]:
    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> JSONResponse:
        try:
            async with asyncio.timeout(ready_timeout):
                reachable = await runtime.db.ping()
        except TimeoutError:
            reachable = False
        if reachable:
            return JSONResponse({"status": "ready", "database": "ok"})
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)

    return healthz, readyz
