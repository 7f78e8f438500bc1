"""userErrors: the domain's validation problems as data, never as exceptions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.domain.errors import DomainError
from emailkit.domain.transactions import ATTEMPTS, run_in_transaction
from emailkit.schema.context import Info
from emailkit.schema.enums import ErrorCode

R = TypeVar("R")


@strawberry.type(description="A problem with the input; nothing was changed.")
class UserError:
    field: str | None = strawberry.field(description="The input field at fault (camelCase), if any.")
    message: str
    code: ErrorCode


def to_user_errors(exc: DomainError) -> list[UserError]:
    return [UserError(field=e.field, message=e.message, code=e.code) for e in exc.errors]


@dataclass
class Outcome(Generic[R]):
    value: R | None = None
    errors: list[UserError] = field(default_factory=list)


async def mutate(
    info: Info, work: Callable[[AsyncSession], Awaitable[R]], *, rerun: bool = True
) -> Outcome[R]:
    """Run one service call in one transaction (again if a concurrent change made the database refuse it,
    unless `rerun` is off: work that consumes its input, such as an upload, runs once); a DomainError rolls it
    back and becomes userErrors."""
    try:
        attempts = ATTEMPTS if rerun else 1
        return Outcome(value=await run_in_transaction(info.context.db, work, attempts=attempts))
    except DomainError as exc:
        return Outcome(errors=to_user_errors(exc))


@strawberry.type
class DeletePayload:
    deleted_id: strawberry.ID | None
    user_errors: list[UserError]
