"""Per-request GraphQL context: the runtime, the caller and the request's DataLoaders."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.websockets import WebSocket
from strawberry.dataloader import DataLoader
from strawberry.types import Info as StrawberryInfo

from emailkit.db.engine import Database
from emailkit.domain.apikeys import Principal
from emailkit.domain.child_pages import ChildPage
from emailkit.domain.counting import Count
from emailkit.domain.pagination import Page
from emailkit.domain.runtime import Runtime
from emailkit.schema.loaders import Loaders, PageArgs
from emailkit.schema.relay import Connection, check_first, decode_cursor

M = TypeVar("M")
T = TypeVar("T")


@dataclass
class Context:
    runtime: Runtime
    principal: Principal | None
    request: Request | WebSocket | None = None
    # The workspace the operation acts in (see emailkit.web.workspace); None: an instance key naming none.
    workspace_id: int | None = None
    connection_params: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def db(self) -> Database:
        return self.runtime.db

    @cached_property
    def loaders(self) -> Loaders:
        one_operation = self.request is not None and self.request.scope["type"] == "http"
        return Loaders(
            self.runtime.db, exact_count_limit=self.runtime.exact_count_limit, shared=one_operation
        )

    async def release_reads(self) -> None:
        """Give the request's read session back to the pool (a no-op if nothing was read)."""
        loaders = self.__dict__.get("loaders")
        if isinstance(loaders, Loaders):
            await loaders.release()

    async def connection(
        self,
        fetch: Callable[[AsyncSession, int, int | None], Awaitable[Page[M]]],
        convert: Callable[[M], T],
        first: int,
        after: str | None,
    ) -> Connection[T]:
        """Run a keyset page query and wrap it as a connection; totalCount is computed only if selected."""
        first = check_first(first, self.runtime.max_page_size)
        after_key = decode_cursor(after)
        async with self.loaders.session() as session:
            page = await fetch(session, first, after_key)

        async def count() -> Count:
            async with self.loaders.session() as session:
                return await page.total(session, self.runtime.exact_count_limit)

        return Connection.build(
            [convert(item) for item in page.items],
            page.keys,
            has_next=page.has_next,
            has_previous=after_key is not None,
            count=count,
        )

    async def child_connection(
        self,
        pages: DataLoader[tuple[int, PageArgs], ChildPage[M]],
        counts: DataLoader[tuple[int, Any], Count],
        parent: int,
        convert: Callable[[M], T],
        first: int,
        after: str | None,
        filter: Any = None,
    ) -> Connection[T]:
        """A nested connection: the parents of a page are read together, and counted together if asked."""
        first = check_first(first, self.runtime.max_page_size)
        after_key = decode_cursor(after)
        page = await pages.load((parent, PageArgs(first, after_key, filter)))
        return Connection.build(
            [convert(item) for item in page.items],
            page.keys,
            has_next=page.has_next,
            has_previous=after_key is not None,
            count=lambda: counts.load((parent, filter)),
        )


Info = StrawberryInfo[Context, None]
