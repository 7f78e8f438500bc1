"""Lazy references: how a type names a type whose module imports its own, and gets that class in a resolver.

`Annotated["CampaignType", strawberry.lazy("emailkit.schema.types.campaigns")]` lets strawberry find the type
when the schema is built; :func:`resolved` gives a resolver the same class, from the same reference, when it
has a row to wrap. The schema is built by then, so every type module is loaded.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast, get_args

from strawberry.types.lazy_type import StrawberryLazyReference

T = TypeVar("T")

# Resolved once each: strawberry's resolution also compares the module with the main one, a stat() per call.
_classes: dict[object, type[Any]] = {}


def resolved(reference: type[T]) -> type[T]:
    """The class that an `Annotated[..., strawberry.lazy(...)]` reference names."""
    found = _classes.get(reference)
    if found is None:
        name, lazy = get_args(reference)
        if not isinstance(lazy, StrawberryLazyReference):
            raise TypeError(f"Not a lazy reference: {reference!r}")
        found = _classes[reference] = lazy.resolve_forward_ref(name).resolve_type()
    return cast("type[T]", found)
