"""userErrors: the domain's validation problems as data, never as exceptions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.types.nodes import SelectedField

from emailkit.domain.errors import DomainError
from emailkit.domain.sending import dispatch
from emailkit.domain.sending.dispatch import Dispatched
from emailkit.domain.sending.jobs import Jobs
from emailkit.domain.transactions import ATTEMPTS, run_in_transaction
from emailkit.domain.validation import unstorable_text
from emailkit.schema.context import Info
from emailkit.schema.enums import ErrorCode
from emailkit.schema.operation_metrics import count_user_errors

R = TypeVar("R")


@strawberry.type(description="A problem with the input; nothing was changed.")
class UserError:
    field: str | None = strawberry.field(description="The input field at fault (camelCase), if any.")
    message: str
    code: ErrorCode


@strawberry.type(description="Something to know about a change that was made all the same.")
class MutationWarning:
    message: str
    code: ErrorCode


def to_user_errors(exc: DomainError) -> list[UserError]:
    count_user_errors([e.code for e in exc.errors])
    return [UserError(field=e.field, message=e.message, code=e.code) for e in exc.errors]


@dataclass
class Outcome(Generic[R]):
    value: R | None = None
    errors: list[UserError] = field(default_factory=list)


def text_errors(info: Info, *, exempt: Collection[str] = ()) -> list[UserError]:
    """userErrors for text in this field's arguments that no database can store (NUL, unpaired
    surrogates), found before any service sees it. `exempt` names inputs (``csv``) whose service
    reports such text itself, e.g. per CSV row."""
    errors = []
    selected = info.selected_fields[0]
    arguments = selected.arguments if isinstance(selected, SelectedField) else {}
    for name, value in arguments.items():
        for path, problem in unstorable_text(value, name):
            field = path.removeprefix("input.") if name == "input" else path
            if field.split(".")[0].split("[")[0] not in exempt:
                errors.append(UserError(field=field, message=problem, code=ErrorCode.INVALID_TEXT))
    count_user_errors([e.code for e in errors])
    return errors


async def _checked(info: Info, text_exempt: Collection[str], run: Callable[[], Awaitable[R]]) -> Outcome[R]:
    """`run`, unless the arguments hold unstorable text; its DomainError (nothing committed) as userErrors."""
    if errors := text_errors(info, exempt=text_exempt):
        return Outcome(errors=errors)
    try:
        return Outcome(value=await run())
    except DomainError as exc:
        return Outcome(errors=to_user_errors(exc))


async def mutate(
    info: Info,
    work: Callable[[AsyncSession], Awaitable[R]],
    *,
    rerun: bool = True,
    text_exempt: Collection[str] = (),
) -> Outcome[R]:
    """Run one service call in one transaction (again if a concurrent change made the database refuse it,
    unless `rerun` is off: work that consumes its input, such as an upload, runs once); a DomainError rolls it
    back and becomes userErrors. Every mutation goes through here or `mutate_then_enqueue`, so text no
    database can store is refused in one place, once."""
    attempts = ATTEMPTS if rerun else 1
    return await _checked(
        info, text_exempt, lambda: run_in_transaction(info.context.db, work, attempts=attempts)
    )


async def mutate_then_enqueue(
    info: Info, work: Callable[[AsyncSession], Awaitable[tuple[R, Jobs]]]
) -> Outcome[Dispatched[R]]:
    """`mutate` for work that plans jobs: committed as there (reruns included), then its jobs are enqueued
    (``dispatch.commit_then_enqueue``). An unreachable queue is in the value's ``queue_error``, for the
    mutation to answer with a warning or, by re-raising it, with a QUEUE_UNAVAILABLE error."""
    return await _checked(info, (), lambda: dispatch.commit_then_enqueue(info.context.runtime, work))


@strawberry.type
class DeletePayload:
    deleted_id: strawberry.ID | None
    user_errors: list[UserError]
