"""Global IDs, opaque keyset cursors and the generic connection types."""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import strawberry
from graphql import GraphQLError

from emailkit import globalid
from emailkit.domain.counting import Count, CountPrecision
from emailkit.domain.errors import DomainError, ErrorCode

T = TypeVar("T")

strawberry.enum(
    CountPrecision,
    name="CountPrecision",
    description=(
        "How exact a `totalCount` is. EXACT: the number of matches. ESTIMATE: there are more matches than the "
        "server counts exactly (EMAILKIT_EXACT_COUNT_LIMIT, 10,000 by default) and the number is PostgreSQL's "
        "query-planner estimate from table statistics: within a few per cent for all subscribers, a list or a "
        "status, about 10% for a search, up to a factor of two for an attribute filter; show it as "
        '"≈98,000" (or as "10,000+" where a rough figure would mislead). AT_LEAST: there are more matches '
        "than the number, which is that limit (on SQLite, and for nested connections such as a campaign's "
        'deliveries): show it as "10,000+".'
    ),
)


@strawberry.interface(description="An object with a globally unique ID.")
class Node:
    id: strawberry.ID


def to_global_id(type_name: str, pk: int) -> strawberry.ID:
    return strawberry.ID(globalid.encode(type_name, pk))


parse_global_id = globalid.parse


def decode_id(value: str, expected: str, field: str = "id") -> int:
    """Decode a global ID of the expected type, or raise a userError-shaped DomainError."""
    parsed = parse_global_id(value)
    if parsed is None or parsed[0] != expected:
        raise DomainError.single(ErrorCode.INVALID_ID, f"Not a valid {expected} ID: {value!r}", field)
    return parsed[1]


def decode_ids(values: Sequence[str], expected: str, field: str) -> list[int]:
    return [decode_id(v, expected, field) for v in values]


decode_id_or_none = globalid.pk_of


def query_id(value: str, expected: str) -> int:
    """Decode a global ID given to a query, which has no userErrors: a malformed one is a GraphQL error."""
    pk = decode_id_or_none(value, expected)
    if pk is None:
        raise GraphQLError(f"Not a valid {expected} ID: {value!r}", extensions={"code": "INVALID_ID"})
    return pk


def encode_cursor(key: int) -> str:
    return base64.urlsafe_b64encode(f"k:{key}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, key = raw.partition(":")
        if prefix == "k" and globalid.is_pk(key.removeprefix("-")):
            return int(key)
    # ValueError: a cursor with characters outside ASCII cannot even be base64-decoded.
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise GraphQLError("Invalid cursor", extensions={"code": "INVALID_CURSOR"})


def check_first(first: int, cap: int) -> int:
    if first < 0 or first > cap:
        raise GraphQLError(f"`first` must be between 0 and {cap}", extensions={"code": "INVALID_ARGUMENT"})
    return first


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo
    count: strawberry.Private[Callable[[], Awaitable[Count]]]

    @strawberry.field(
        description=(
            "Number of items matching the filters, across all pages. Counted exactly up to the server's limit "
            "(EMAILKIT_EXACT_COUNT_LIMIT, 10,000 by default), so that a count costs the same however many items "
            "there are; beyond it, the query planner's estimate (top-level connections on PostgreSQL) or the "
            "limit itself. `totalCountPrecision` says which."
        )
    )
    async def total_count(self) -> int:
        return (await self.count()).value

    @strawberry.field(description="How exact `totalCount` is (EXACT, ESTIMATE or AT_LEAST).")
    async def total_count_precision(self) -> CountPrecision:
        return (await self.count()).precision

    @classmethod
    def build(
        cls,
        nodes: Sequence[T],
        keys: Sequence[int],
        *,
        has_next: bool,
        has_previous: bool,
        count: Callable[[], Awaitable[Count]],
    ) -> Connection[T]:
        edges = [Edge(cursor=encode_cursor(k), node=n) for n, k in zip(nodes, keys, strict=True)]
        return cls(
            edges=edges,
            page_info=PageInfo(
                has_next_page=has_next,
                has_previous_page=has_previous,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
            count=_once(count),
        )


def _once(count: Callable[[], Awaitable[Count]]) -> Callable[[], Awaitable[Count]]:
    """totalCount and totalCountPrecision share one count, started by whichever is resolved first."""
    started: asyncio.Future[Count] | None = None

    def shared() -> Awaitable[Count]:
        nonlocal started
        if started is None:
            started = asyncio.ensure_future(count())
        return started

    return shared
