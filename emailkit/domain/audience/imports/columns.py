"""Which column of a subscriber CSV feeds which field: the header mapped to ``email``, ``name``, attribute
paths, or ignored, by its names and the caller's columnMap. Pure: no database, no file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from emailkit.domain.errors import DomainError, ErrorCode, FieldError

MAX_COLUMNS: Final = 500

EMAIL_HEADERS: Final = frozenset({"email", "e-mail", "email address", "e-mail address", "mail"})
NAME_HEADERS: Final = frozenset({"name", "full name"})
IGNORE: Final = "-"
ATTRIBUTES_PREFIX: Final = "attributes."


@dataclass(frozen=True)
class ColumnPlan:
    """Which column feeds which field; attribute columns carry their key path."""

    width: int
    email: int
    name: int | None
    attributes: tuple[tuple[int, tuple[str, ...]], ...]
    ignored: tuple[str, ...] = ()
    headers: tuple[str, ...] = field(default=())


def _error(message: str, field: str = "columnMap") -> DomainError:
    return DomainError(FieldError(field, message, ErrorCode.INVALID_INPUT))


def attribute_path(target: str) -> tuple[str, ...]:
    """`city` -> ("city",), `address.city` or `attributes.address.city` -> ("address", "city").

    A name with an empty dot-separated part (`Dr.`, `a..b`) is one key, not a path."""
    name = target[len(ATTRIBUTES_PREFIX) :] if target.startswith(ATTRIBUTES_PREFIX) else target
    parts = tuple(name.split("."))
    return parts if all(parts) else (name,)


def check_column_map(value: object) -> dict[str, str]:
    """A columnMap as given by the caller: a JSON object of header -> target."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _error('columnMap must be a JSON object of column header to target (e.g. {"E-Mail": "email"})')
    out: dict[str, str] = {}
    for header, target in value.items():
        target = target.strip()
        if not target:
            raise _error(f"columnMap: empty target for column {header!r}")
        if target not in ("email", "name", IGNORE) and not all(attribute_path(target)):
            raise _error(f"columnMap: {target!r} is not a valid attribute path")
        out[header] = target
    return out


def plan_columns(header: list[str], column_map: Mapping[str, str], *, source_field: str) -> ColumnPlan:
    """Map the header row to fields: `email`, `name`, attribute paths, or ignored columns."""
    stripped = [h.strip() for h in header]
    if len(stripped) > MAX_COLUMNS:
        raise _error(
            f"The file has {len(stripped)} columns; at most {MAX_COLUMNS} are supported", source_field
        )
    targets = _mapped_targets(column_map, _positions(stripped, source_field))
    # A column the map names as email (or name) replaces the one that would be picked by its header.
    claimed = set(targets.values())

    email: int | None = None
    name: int | None = None
    attributes: list[tuple[int, tuple[str, ...]]] = []
    ignored: list[str] = []
    for index, header_name in enumerate(stripped):
        target = targets.get(index)
        if target is None:
            if not header_name:
                continue
            target = _target_by_header(header_name, claimed, email_free=email is None, name_free=name is None)
        if target == IGNORE:
            ignored.append(header_name)
        elif target == "email":
            if email is not None:
                raise _error(f"Columns {stripped[email]!r} and {header_name!r} both map to email")
            email = index
        elif target == "name":
            if name is not None:
                raise _error(f"Columns {stripped[name]!r} and {header_name!r} both map to name")
            name = index
        else:
            attributes.append((index, attribute_path(target)))
    if email is None:
        shown = ", ".join(repr(h) for h in stripped if h) or "none"
        raise _error(
            f"The file has no email column (columns: {shown}); name one with columnMap, "
            'e.g. {"E-Mail": "email"}',
            source_field,
        )
    _check_paths(attributes, stripped)
    return ColumnPlan(
        width=len(header),
        email=email,
        name=name,
        attributes=tuple(attributes),
        ignored=tuple(ignored),
        headers=tuple(stripped),
    )


def _positions(headers: list[str], source_field: str) -> dict[str, int]:
    """Each named column's position by its case-folded header; a header given twice is refused."""
    by_folded: dict[str, int] = {}
    for position, header_name in enumerate(headers):
        if not header_name:
            continue
        folded = header_name.casefold()
        if folded in by_folded:
            raise _error(
                f"Column {header_name!r} appears more than once in the header; rename one of them",
                source_field,
            )
        by_folded[folded] = position
    return by_folded


def _mapped_targets(column_map: Mapping[str, str], by_folded: Mapping[str, int]) -> dict[int, str]:
    """The columnMap's targets by column position; every column it names must be in the file."""
    targets: dict[int, str] = {}
    for key, target in column_map.items():
        found = by_folded.get(key.strip().casefold())
        if found is None:
            raise _error(f"columnMap names {key!r}, which is not a column of the file")
        targets[found] = target
    return targets


def _target_by_header(header_name: str, claimed: set[str], *, email_free: bool, name_free: bool) -> str:
    """What an unmapped column feeds by its header: the first email-like (or name-like) column takes that field
    unless the map gave it to another column; any other column is an attribute."""
    folded = header_name.casefold()
    if folded in EMAIL_HEADERS and email_free and "email" not in claimed:
        return "email"
    if folded in NAME_HEADERS and name_free and "name" not in claimed:
        return "name"
    return ATTRIBUTES_PREFIX + header_name


def _check_paths(attributes: list[tuple[int, tuple[str, ...]]], headers: list[str]) -> None:
    seen: dict[tuple[str, ...], int] = {}
    for index, path in attributes:
        if path in seen:
            raise _error(
                f"Columns {headers[seen[path]]!r} and {headers[index]!r} both map to {'.'.join(path)!r}"
            )
        seen[path] = index
    for path, index in seen.items():
        for depth in range(1, len(path)):
            prefix = path[:depth]
            if prefix in seen:
                raise _error(
                    f"Column {headers[seen[prefix]]!r} sets attribute {'.'.join(prefix)!r}, which column "
                    f"{headers[index]!r} uses as an object"
                )
