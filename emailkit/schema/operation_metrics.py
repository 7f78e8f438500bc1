"""Each GraphQL operation's time by its type, and its errors by code, for ``/metrics``.

First among the schema's extensions, so its ``on_operation`` closes last: the errors it counts are those the
client receives, with the codes ErrorPolicy gave them. A subscription is timed for nothing (it lasts as long as
its client listens); its errors are counted all the same.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from emailkit.metrics import record as metrics
from emailkit.schema.enums import ErrorCode

# Codes a response's errors carry besides the domain's: set by ErrorPolicy, the permission checks, the view.
_OTHER_CODES = frozenset(
    {
        "SERVICE_UNAVAILABLE",
        "QUERY_TIMEOUT",
        "UNAUTHENTICATED",
        "FORBIDDEN",
        "RATE_LIMITED",
        "INVALID_CURSOR",
        "INVALID_ID",
        "INVALID_ARGUMENT",
        "PAYLOAD_TOO_LARGE",
        # No code of ours: a query that does not parse or validate, or a masked internal error.
        "GRAPHQL_INVALID",
        "INTERNAL_SERVER_ERROR",
    }
)
ERROR_CODES = frozenset(code.value for code in ErrorCode) | _OTHER_CODES


def error_code(error: GraphQLError) -> str:
    code = (error.extensions or {}).get("code")
    if isinstance(code, str):
        return code if code in ERROR_CODES else "other"
    return "GRAPHQL_INVALID" if error.original_error is None else "INTERNAL_SERVER_ERROR"


class OperationMetrics(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        context = self.execution_context
        try:
            kind = context.operation_type
        except RuntimeError:  # the text did not parse: there is no operation to speak of
            kind = None
        if kind is not OperationType.SUBSCRIPTION:
            metrics.graphql_operation(
                kind.value if kind is not None else "other", time.perf_counter() - started
            )
        result = context.result
        errors = (result.errors if result is not None else None) or context.pre_execution_errors or ()
        for error in errors:
            metrics.graphql_error("error", error_code(error))


def count_user_errors(codes: list[ErrorCode]) -> None:
    for code in codes:
        metrics.graphql_error("user_error", code.value)
