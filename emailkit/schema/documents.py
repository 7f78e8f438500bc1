"""Parsed and validated documents, kept per query text, so that a repeated operation skips both steps.

A frontend sends the same few dozen operations again and again. For a page of 50 subscribers, parsing took
≈ 0.3 ms and validation (graphql-core's rules with the depth and alias limits) ≈ 1.6 ms of ≈ 15 ms of CPU per
request (bench/graphql_wire.py). What is kept here is a function of the query text alone: the document, the
verdict of validation and of the document's size check, and the first unstorable string literal, if any.
What depends on the variables (the cost, which reads `first`; the variables' coercion and their text) is
computed for every request, so every limit holds exactly as it does without the cache.

The token limit is a parse option; it is the same for every text this cache sees (one cache per schema), so a
document kept once passed it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from graphql import ASTValidationRule, DocumentNode, GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document
from strawberry.types import ExecutionContext

from emailkit.boundedcache import BoundedLRU
from emailkit.schema.cost import oversized

# A parsed document takes ≈ 70-120 bytes per character of its text (1.8 MB for 3,000 tokens in 15 KB), so the
# cache is bounded by the characters it keeps: 256 K characters stay under ≈ 30 MB.
MAX_ENTRIES = 256
MAX_CHARS = 256 * 1024
# A longer text is parsed and validated every time, as without the cache.
MAX_QUERY_CHARS = 16 * 1024


@dataclass
class CheckedDocument:
    document: DocumentNode
    # None until validated (a document refused for its operation type, a GET mutation say, never is).
    errors: tuple[GraphQLError, ...] | None = None
    literals_checked: bool = False
    # (path, message) of the first string literal no database can store (see UnstorableTextGuard).
    literal_problem: tuple[str, str] | None = None


class DocumentCache:
    def __init__(
        self,
        *,
        max_entries: int = MAX_ENTRIES,
        max_chars: int = MAX_CHARS,
        max_query_chars: int = MAX_QUERY_CHARS,
    ) -> None:
        self._entries: BoundedLRU[str, CheckedDocument] = BoundedLRU(
            max_entries=max_entries, max_weight=max_chars
        )
        self.max_query_chars = max_query_chars

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, query: str) -> CheckedDocument | None:
        return self._entries.get(query)

    def keep(self, query: str, document: DocumentNode) -> CheckedDocument:
        checked = CheckedDocument(document)
        if len(query) <= self.max_query_chars:
            self._entries.put(query, checked, len(query))
        return checked

    def checked(self, context: ExecutionContext) -> CheckedDocument | None:
        """The cache's entry for this operation's document, if it has one."""
        if context.query is None or context.graphql_document is None:
            return None
        found = self._entries.get(context.query)
        return found if found is not None and found.document is context.graphql_document else None


def verdict(context: ExecutionContext) -> list[GraphQLError]:
    """The document's size check, then validation with the context's rules (empty when it is valid)."""
    assert context.graphql_document is not None
    refusal = oversized(context.graphql_document)
    if refusal is not None:
        return [refusal]
    return validate_document(context.schema._schema, context.graphql_document, context.validation_rules)


class CheckedDocuments(SchemaExtension):
    """Parses and validates each query text once (with the limits' rules and token count), then reuses both.

    Created for each operation by a factory; `cache` is the schema's, shared by all of them.
    """

    def __init__(
        self, cache: DocumentCache, rules: tuple[type[ASTValidationRule], ...], *, max_tokens: int
    ) -> None:
        self.cache = cache
        self.rules = rules
        self.max_tokens = max_tokens
        self._checked: CheckedDocument | None = None

    def on_operation(self) -> Iterator[None]:
        ctx = self.execution_context
        ctx.parse_options["max_tokens"] = self.max_tokens
        ctx.validation_rules = (*ctx.validation_rules, *self.rules)
        yield

    def on_parse(self) -> Iterator[None]:
        ctx = self.execution_context
        if ctx.query is not None and ctx.graphql_document is None:
            self._checked = self.cache.get(ctx.query)
            if self._checked is not None:
                ctx.graphql_document = self._checked.document
        yield
        if self._checked is None and ctx.query is not None and ctx.graphql_document is not None:
            self._checked = self.cache.keep(ctx.query, ctx.graphql_document)

    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        if ctx.pre_execution_errors is None and ctx.graphql_document is not None:
            checked = self._checked
            if checked is None or checked.document is not ctx.graphql_document:
                ctx.pre_execution_errors = verdict(ctx)
            else:
                if checked.errors is None:
                    checked.errors = tuple(verdict(ctx))
                # A list of its own: the errors are shared, the list is the operation's.
                ctx.pre_execution_errors = list(checked.errors)
        yield
