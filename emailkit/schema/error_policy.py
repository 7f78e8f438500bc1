"""What a caller is told when an operation fails for a reason other than its own input.

Database outages, statement timeouts and an unreachable job queue get stable codes a client can act on
(retry later, ask for less); any other exception is a bug whose details stay in the log, never in the
response.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from graphql import GraphQLError
from graphql.language import DocumentNode, StringValueNode, Visitor, visit
from strawberry.extensions import MaskErrors, SchemaExtension
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from emailkit.db.engine import Failure, failure_of
from emailkit.db.scope import NoWorkspaceScope
from emailkit.domain.errors import ErrorCode
from emailkit.domain.ports.queue import QueueUnavailable
from emailkit.domain.validation import unstorable_text
from emailkit.domain.workspaces import HEADER
from emailkit.schema.documents import DocumentCache

log = logging.getLogger(__name__)

SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
QUERY_TIMEOUT = "QUERY_TIMEOUT"
QUEUE_UNAVAILABLE = ErrorCode.QUEUE_UNAVAILABLE.value
INVALID_TEXT = ErrorCode.INVALID_TEXT.value

UNAVAILABLE_MESSAGE = "The database is unavailable; try again shortly"
_MESSAGES = {
    Failure.UNAVAILABLE: (UNAVAILABLE_MESSAGE, SERVICE_UNAVAILABLE),
    Failure.STATEMENT_TIMEOUT: (
        "The database took too long to answer and the query was cancelled; ask for less (smaller `first`, "
        "fewer nested fields) or try again",
        QUERY_TIMEOUT,
    ),
}


def _is_ours(error: GraphQLError) -> bool:
    # Our own GraphQLErrors (permissions, bad cursors) carry codes meant for clients; anything else is a bug
    # whose details must not leak outside debug mode.
    return error.original_error is None or isinstance(error.original_error, GraphQLError)


class ErrorPolicy(MaskErrors):
    """Outages and timeouts become coded errors; other unexpected errors are masked unless `debug`."""

    def __init__(self, *, debug: bool = False) -> None:
        super().__init__(should_mask_error=lambda error: not debug and not _is_ours(error))

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        return super()._process_errors([self._translate(e) for e in errors])

    @staticmethod
    def _translate(error: GraphQLError) -> GraphQLError:
        if error.original_error is None or isinstance(error.original_error, GraphQLError):
            return error
        if isinstance(error.original_error, QueueUnavailable):
            # Raised after the change committed (mutations enqueue last): say what did and did not happen.
            message, code = (
                "The change was saved, but the job queue is unreachable, so the work it starts (such as "
                "sending mail) could not be queued",
                QUEUE_UNAVAILABLE,
            )
        elif isinstance(error.original_error, NoWorkspaceScope):
            message, code = (
                f"An instance key acts inside a workspace only when it names one: send {HEADER}: <workspace id>",
                ErrorCode.WORKSPACE_REQUIRED.value,
            )
        elif (failure := failure_of(error.original_error)) is not None:
            message, code = _MESSAGES[failure]
        else:
            return error
        log.warning("%s: %s", code, error.original_error)
        return GraphQLError(
            message, nodes=error.nodes, path=error.path, original_error=None, extensions={"code": code}
        )


class _Strings(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.values: list[str] = []

    def enter_string_value(self, node: StringValueNode, *_: object) -> None:
        self.values.append(node.value)


class UnstorableTextGuard(SchemaExtension):
    """Refuse a query whose arguments hold text no database can store (NUL, unpaired surrogates): searched
    for, it could only fail inside the database. Mutations answer such text as userErrors instead (see
    emailkit.schema.errors.mutate), so they pass through here.

    The variables are checked on every request; the document's literals once per cached document."""

    def __init__(self, documents: DocumentCache | None = None) -> None:
        self.documents = documents

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        try:
            mutation = context.operation_type is OperationType.MUTATION
        except RuntimeError:
            mutation = False  # no such operation: execution reports that itself
        if not mutation:
            problem = self._first_problem()
            if problem is not None:
                path, message = problem
                context.result = ExecutionResult(
                    data=None,
                    errors=[
                        GraphQLError(
                            f"{path}: {message}" if path else message, extensions={"code": INVALID_TEXT}
                        )
                    ],
                )
        yield

    def _first_problem(self) -> tuple[str, str] | None:
        context = self.execution_context
        for found in unstorable_text(context.variables or {}, ""):
            return found
        if context.graphql_document is None:
            return None
        checked = self.documents.checked(context) if self.documents is not None else None
        if checked is None:
            return _literal_problem(context.graphql_document)
        if not checked.literals_checked:
            checked.literal_problem = _literal_problem(context.graphql_document)
            checked.literals_checked = True
        return checked.literal_problem


def _literal_problem(document: DocumentNode) -> tuple[str, str] | None:
    strings = _Strings()
    visit(document, strings)
    for found in unstorable_text(strings.values, ""):
        return "", found[1]
    return None
