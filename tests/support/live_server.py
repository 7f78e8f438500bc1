"""The app behind uvicorn on a loopback port, in the test's own event loop (real HTTP and WebSocket)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.applications import Starlette


@asynccontextmanager
async def live_server(app: Starlette) -> AsyncIterator[str]:
    """Serve ``app`` until the block ends; yields ``host:port``."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    # Like `emailkit serve`: forwarding headers are the app's business (EMAILKIT_TRUSTED_PROXIES), not uvicorn's.
    config = uvicorn.Config(
        app, lifespan="off", log_level="warning", ws="websockets-sansio", proxy_headers=False
    )
    srv = uvicorn.Server(config)
    # What `serve()` does, minus its signal handling and idle loop: listening once startup returns.
    config.load()
    srv.lifespan = config.lifespan_class(config)
    await srv.startup(sockets=[sock])
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await srv.shutdown(sockets=[sock])
