"""The GraphQL schema, built by a factory (no module-level schema object, no I/O at import).

Where things are: `types/` holds the object types, one module per area; `queries/` and `mutations/` the root
fields by area, with their inputs and payloads; `subscriptions.py` the live ones. The modules beside them are
shared by all: the request context and its DataLoaders, global IDs and connections, userErrors, enums, role
checks, and the extensions that guard every operation (document cache, cost, error policy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import strawberry
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter, SchemaExtension
from strawberry.tools import merge_types

from emailkit.schema.cost import CostLimits, QueryCost
from emailkit.schema.documents import CheckedDocuments, DocumentCache
from emailkit.schema.error_policy import ErrorPolicy, UnstorableTextGuard
from emailkit.schema.mutations import MUTATIONS
from emailkit.schema.observe import OperationContext
from emailkit.schema.operation_metrics import OperationMetrics
from emailkit.schema.queries import QUERIES
from emailkit.schema.subscriptions import Subscription


@dataclass(frozen=True)
class SchemaLimits:
    max_depth: int = 12
    max_aliases: int = 30
    max_tokens: int = 3000
    max_cost: int = 20_000
    # The resolvers' cap on `first`; the cost analysis counts a connection without a default as this many.
    max_page_size: int = 250
    debug: bool = False


def build_schema(limits: SchemaLimits | None = None) -> strawberry.Schema:
    limits = limits or SchemaLimits()
    # The limiters' rules are built once (each limiter instance makes a new rule class, which would also defeat
    # any cache keyed by the rules); CheckedDocuments applies them with the token limit, once per query text.
    rules = (
        *QueryDepthLimiter(max_depth=limits.max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=limits.max_aliases).validation_rules,
    )
    documents = DocumentCache()
    cost_limits = CostLimits(limit=limits.max_cost, max_page_size=limits.max_page_size)
    # Factories, so each operation gets fresh extension instances.
    extensions: list[Callable[[], SchemaExtension]] = [
        # First, so it sees the errors as the others leave them (emailkit/schema/operation_metrics.py).
        OperationMetrics,
        lambda: CheckedDocuments(documents, rules, max_tokens=limits.max_tokens),
        lambda: QueryCost(cost_limits),
        lambda: UnstorableTextGuard(documents),
        lambda: ErrorPolicy(debug=limits.debug),
        OperationContext,
    ]
    return strawberry.Schema(
        query=merge_types("Query", QUERIES),
        mutation=merge_types("Mutation", MUTATIONS),
        subscription=Subscription,
        extensions=extensions,
    )
