"""Input checks shared by the services."""

from __future__ import annotations

import json
from collections.abc import Iterator

from email_validator import EmailNotValidError, validate_email

from emailkit.domain.errors import DomainError, ErrorCode, FieldError


def normalize_email(raw: str, field: str = "email") -> str:
    """Syntax-check an address and return it lower-cased (no DNS look-up: imports must stay fast)."""
    value = (raw or "").strip()
    if not value:
        raise DomainError.single(ErrorCode.REQUIRED, "Email is required", field)
    try:
        info = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise DomainError.single(ErrorCode.INVALID_EMAIL, f"Invalid email address: {exc}", field) from None
    return info.normalized.lower()


def check_length(errors: list[FieldError], field: str, value: str | None, limit: int) -> None:
    if value is not None and len(value) > limit:
        errors.append(FieldError(field, f"Must be at most {limit} characters", ErrorCode.TOO_LONG))


def require(errors: list[FieldError], field: str, value: str | None, what: str) -> None:
    if value is None or not value.strip():
        errors.append(FieldError(field, f"{what} is required", ErrorCode.REQUIRED))


def raise_if(errors: list[FieldError]) -> None:
    if errors:
        raise DomainError(errors)


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text on every supported database (PostgreSQL refuses NUL and
    unpaired surrogates cannot be encoded), or None when it can."""
    if "\x00" in value:
        return "Must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "Must be valid Unicode text (it contains an unpaired surrogate)"
    return None


def unstorable_text(value: object, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, problem) for every string inside `value` (dict keys included) that `text_problem` refuses;
    paths look like ``attributes.city`` or ``emails[2]``."""
    if isinstance(value, str):
        problem = text_problem(value)
        if problem is not None:
            yield path, problem
    elif isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and (problem := text_problem(key)) is not None:
                yield (path or inner), f"Key {key!r}: {problem}"
            else:
                yield from unstorable_text(item, inner)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from unstorable_text(item, f"{path}[{index}]")


def check_text(errors: list[FieldError], field: str, value: str | None) -> None:
    problem = None if value is None else text_problem(value)
    if problem is not None:
        errors.append(FieldError(field, problem, ErrorCode.INVALID_TEXT))


def json_object_errors(
    value: object, field: str, *, what: str, max_bytes: int, max_depth: int
) -> list[FieldError]:
    """Problems with a caller's JSON object (a subscriber's attributes, a custom event's properties): string
    keys, at most `max_depth` levels, at most `max_bytes` as compact UTF-8 JSON. `what` names it in the
    messages ("Attributes")."""
    if not isinstance(value, dict):
        return [FieldError(field, f"{what} must be a JSON object", ErrorCode.INVALID_INPUT)]
    # Walked iteratively and depth-checked before serialising, so hostile nesting cannot exhaust the stack.
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return [FieldError(field, f"{what} may nest at most {max_depth} levels", ErrorCode.INVALID_INPUT)]
        if isinstance(node, dict):
            if not all(isinstance(k, str) for k in node):
                return [FieldError(field, f"{what}: keys must be strings", ErrorCode.INVALID_INPUT)]
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    try:
        size = len(json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode())
    except (TypeError, ValueError):
        return [FieldError(field, f"{what} must contain only JSON values", ErrorCode.INVALID_INPUT)]
    if size > max_bytes:
        return [
            FieldError(
                field, f"{what} must be at most {max_bytes} bytes as JSON ({size} given)", ErrorCode.TOO_LONG
            )
        ]
    return []
