"""Query cost analysis: an operation's cost is computed from its document before any resolver runs.

Like GitHub's and Shopify's APIs, the cost estimates the rows an operation can touch:
- a field that takes `first` (a connection, or a list bounded by `first`) costs CONNECTION_BASE plus `first` times
  the cost of everything selected under it (its default when `first` is not given);
- any other field returning an object costs OBJECT_COST plus what is selected under it, times LIST_ESTIMATE when
  it returns a list of objects with no `first` to bound it;
- a scalar or enum field costs SCALAR_COST;
- a field declared with `metadata=cost(n)` costs n itself instead (a count over a whole audience, say);
- the `edges` of a connection are only a wrapper: what they hold is counted, not the wrapper itself.

Fragments and inline fragments count as if written out, aliases count once each, and `@skip`/`@include` are
honoured with the operation's variables. Introspection is free (its size is fixed by the schema).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLIncludeDirective,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSkipDirective,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    get_named_type,
    is_composite_type,
    is_list_type,
)
from graphql.execution.values import (
    VariableValues,
    get_argument_values,
    get_directive_values,
    get_variable_values,
)
from graphql.type.definition import GraphQLOutputType
from strawberry.extensions import SchemaExtension

CONNECTION_BASE = 2
OBJECT_COST = 1
SCALAR_COST = 1
LIST_ESTIMATE = 10
# A COUNT over the subscribers matching a segment filter: each is its own query plan over the whole audience.
AUDIENCE_COUNT = 100

QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
# Selections of a document with its fragments written out. The depth and alias checks expand fragments one
# selection at a time, so a few hundred tokens of fragments spreading fragments would keep them busy for minutes.
MAX_EXPANDED_SELECTIONS = 10_000


_COST_KEY = "emailkit.cost"


def cost(points: int) -> dict[str, int]:
    """Field metadata giving a field its own cost: `@strawberry.field(metadata=cost(100))`."""
    return {_COST_KEY: points}


@dataclass(frozen=True)
class CostLimits:
    limit: int
    # What `first` counts as when a connection has no default for it (the resolvers refuse more than this).
    max_page_size: int


def operation_cost(
    schema: GraphQLSchema,
    document_definitions: Any,
    operation: OperationDefinitionNode,
    raw_variables: Mapping[str, Any] | None,
    max_page_size: int,
) -> int:
    fragments = {d.name.value: d for d in document_definitions if isinstance(d, FragmentDefinitionNode)}
    coerced = get_variable_values(schema, operation.variable_definitions or (), dict(raw_variables or {}))
    # Variables that do not coerce fail the operation before any resolver runs; count their defaults meanwhile.
    variables = coerced if isinstance(coerced, VariableValues) else None
    root = schema.get_root_type(operation.operation)
    if root is None:
        return 0
    return _Counter(schema, fragments, variables, max_page_size).selection_cost(operation.selection_set, root)


class _Counter:
    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: dict[str, FragmentDefinitionNode],
        variables: VariableValues | None,
        max_page_size: int,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.max_page_size = max_page_size
        self._fragment_costs: dict[tuple[str, str | None], int] = {}

    def selection_cost(self, selection_set: SelectionSetNode | None, parent: Any) -> int:
        if selection_set is None:
            return 0
        total = 0
        for selection in selection_set.selections:
            if not self._included(selection):
                continue
            if isinstance(selection, FieldNode):
                total += self.field_cost(selection, parent)
            elif isinstance(selection, InlineFragmentNode):
                total += self.selection_cost(selection.selection_set, self._condition(selection, parent))
            elif isinstance(selection, FragmentSpreadNode):
                total += self._fragment_cost(selection.name.value, parent)
        return total

    def _fragment_cost(self, name: str, parent: Any) -> int:
        # Remembered: a fragment spread many times, by fragments spread many times, is still counted in one pass.
        key = (name, getattr(parent, "name", None))
        if key not in self._fragment_costs:
            fragment = self.fragments.get(name)
            self._fragment_costs[key] = (
                0
                if fragment is None
                else self.selection_cost(fragment.selection_set, self._condition(fragment, parent))
            )
        return self._fragment_costs[key]

    def _condition(self, fragment: InlineFragmentNode | FragmentDefinitionNode, parent: Any) -> Any:
        # On an interface or union, a fragment's fields belong to its type condition.
        if fragment.type_condition is None:
            return parent
        return self.schema.get_type(fragment.type_condition.name.value) or parent

    def _included(self, node: Any) -> bool:
        if not node.directives:
            return True
        skip = get_directive_values(GraphQLSkipDirective, node, self.variables)
        if skip is not None and skip.get("if") is True:
            return False
        include = get_directive_values(GraphQLIncludeDirective, node, self.variables)
        return not (include is not None and include.get("if") is False)

    def field_cost(self, node: FieldNode, parent: Any) -> int:
        name = node.name.value
        if name.startswith("__"):
            return 0
        fields = getattr(parent, "fields", None)
        definition: GraphQLField | None = fields.get(name) if fields else None
        if definition is None:
            return 0
        named = get_named_type(definition.type)
        declared = _declared_cost(definition)
        if not is_composite_type(named):
            return SCALAR_COST if declared is None else declared
        children = self.selection_cost(node.selection_set, named)
        if "first" in definition.args:
            return CONNECTION_BASE + self._first(definition, node) * children
        if _is_connection(parent) and name == "edges":
            return children
        multiplier = LIST_ESTIMATE if _returns_list(definition.type) else 1
        return multiplier * ((OBJECT_COST if declared is None else declared) + children)

    def _first(self, definition: GraphQLField, node: FieldNode) -> int:
        try:
            value = get_argument_values(definition, node, self.variables).get("first")
        except GraphQLError:
            value = None
        if not isinstance(value, int):
            return self.max_page_size
        # A negative `first` is refused by the resolver; it selects nothing here.
        return max(value, 0)


def _declared_cost(definition: GraphQLField) -> int | None:
    field = (definition.extensions or {}).get("strawberry-definition")
    metadata = getattr(field, "metadata", None) or {}
    value = metadata.get(_COST_KEY)
    return value if isinstance(value, int) else None


def _is_connection(parent: Any) -> bool:
    return isinstance(parent, GraphQLObjectType) and parent.name.endswith("Connection")


def _returns_list(type_: GraphQLOutputType) -> bool:
    inner = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
    return is_list_type(inner)


def expanded_selections(document: DocumentNode) -> int:
    """How many selections the document's operations have once every fragment spread is written out."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    sizes: dict[str, int] = {}

    def size(selection_set: SelectionSetNode | None) -> int:
        total = 0
        for selection in selection_set.selections if selection_set is not None else ():
            total += 1
            if isinstance(selection, FragmentSpreadNode):
                total += fragment_size(selection.name.value)
            elif isinstance(selection, FieldNode | InlineFragmentNode):
                total += size(selection.selection_set)
        return total

    def fragment_size(name: str) -> int:
        if name not in sizes:
            sizes[name] = 0  # a cycle (refused by validation) counts as empty meanwhile
            fragment = fragments.get(name)
            sizes[name] = size(fragment.selection_set) if fragment is not None else 0
        return sizes[name]

    return sum(size(d.selection_set) for d in document.definitions if isinstance(d, OperationDefinitionNode))


def oversized(document: DocumentNode) -> GraphQLError | None:
    """The refusal of a document whose fragments expand beyond MAX_EXPANDED_SELECTIONS, checked before
    validation (which would spend minutes on it)."""
    selections = expanded_selections(document)
    if selections <= MAX_EXPANDED_SELECTIONS:
        return None
    return GraphQLError(
        f"The document expands to {selections} selections; at most {MAX_EXPANDED_SELECTIONS} are allowed "
        "(spread fewer fragments)",
        extensions={"code": QUERY_TOO_COMPLEX},
    )


def too_complex(cost: int, limit: int) -> GraphQLError:
    return GraphQLError(
        f"Query cost {cost} exceeds the budget of {limit}: ask for smaller pages (`first`) or fewer nested "
        "connections",
        extensions={"code": QUERY_TOO_COMPLEX, "cost": {"requested": cost, "limit": limit}},
    )


class QueryCost(SchemaExtension):
    """Refuses an operation whose cost is over the budget before it runs; reports the cost in `extensions`.

    The cost depends on the variables (`first: $first`, `@include(if: $x)`), so it is computed for every
    request; the document's own size check (`oversized`) runs with validation, whose verdict is kept per
    query text (emailkit.schema.documents)."""

    def __init__(self, limits: CostLimits) -> None:
        self.limits = limits
        self.cost: int | None = None

    def on_execute(self) -> Iterator[None]:
        ctx = self.execution_context
        document = ctx.graphql_document
        schema = ctx.schema._schema
        operation = _operation(document, ctx.operation_name) if document is not None else None
        if document is not None and operation is not None:
            self.cost = operation_cost(
                schema, document.definitions, operation, ctx.variables, self.limits.max_page_size
            )
            if self.cost > self.limits.limit:
                # Raised before the executor starts: Strawberry answers it as the operation's only error.
                raise too_complex(self.cost, self.limits.limit)
        yield

    def get_results(self) -> dict[str, Any]:
        if self.cost is None:
            return {}
        return {"cost": {"requested": self.cost, "limit": self.limits.limit}}


def _operation(document: Any, name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        return operations[0] if len(operations) == 1 else None
    return next((o for o in operations if o.name is not None and o.name.value == name), None)
