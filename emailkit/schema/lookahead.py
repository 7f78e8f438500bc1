"""What an operation selects below the field being resolved, read from the query's syntax tree.

A page resolver uses it to fetch, in the session it already holds, the relations its nodes will be asked for,
so that those fields resolve without an await. Directives (@skip/@include) are ignored: at worst a relation
is fetched that the response then leaves out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    SelectionSetNode,
)
from strawberry.types import Info


def _fields(
    selection_set: SelectionSetNode | None, fragments: Mapping[str, FragmentDefinitionNode]
) -> Iterator[FieldNode]:
    if selection_set is None:
        return
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            yield selection
        elif isinstance(selection, InlineFragmentNode):
            yield from _fields(selection.selection_set, fragments)
        elif isinstance(selection, FragmentSpreadNode):
            fragment = fragments.get(selection.name.value)
            if fragment is not None:
                yield from _fields(fragment.selection_set, fragments)


def selects(info: Info, *path: str) -> bool:
    """Whether the field being resolved selects ``path`` (field names, not aliases) below it."""
    raw = info._raw_info
    nodes: list[FieldNode] = list(raw.field_nodes)
    for name in path:
        nodes = [
            f for node in nodes for f in _fields(node.selection_set, raw.fragments) if f.name.value == name
        ]
        if not nodes:
            return False
    return True
