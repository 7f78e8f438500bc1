"""Each GraphQL operation in logs and traces: its name and type bound to the log context, and a span."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import structlog
from strawberry.extensions import SchemaExtension

from emailkit import traces

log = logging.getLogger(__name__)


class OperationContext(SchemaExtension):
    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        # Parsed and validated by now, so the type is known even when the client named no operation.
        kind = context.operation_type.value
        name = context.operation_name or "anonymous"
        with (
            structlog.contextvars.bound_contextvars(operation=name, operation_type=kind),
            traces.span(f"{kind} {name}", {"graphql.operation.name": name, "graphql.operation.type": kind}),
        ):
            yield
            log.debug("%s %s executed", kind, name)
