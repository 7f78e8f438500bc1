"""What a subscriber's own fields may hold: the name's length, and the attributes, a JSON object with string
keys bounded in depth and size, whose ``timezone`` (if any) is an IANA name. The API's writes and the CSV
import's rows check the same limits.
"""

from __future__ import annotations

import json

from emailkit.domain.audience import timezones
from emailkit.domain.errors import ErrorCode, FieldError

NAME_MAX = 255
ATTRIBUTES_MAX_BYTES = 64 * 1024
ATTRIBUTES_MAX_DEPTH = 10


def attribute_errors(value: object, field: str = "attributes") -> list[FieldError]:
    """Problems with a subscriber's attributes: a JSON object with string keys, bounded in size and depth."""
    if not isinstance(value, dict):
        return [FieldError(field, "Attributes must be a JSON object", ErrorCode.INVALID_INPUT)]
    # Walked iteratively and depth-checked before serialising, so hostile nesting cannot exhaust the stack.
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > ATTRIBUTES_MAX_DEPTH:
            return [
                FieldError(
                    field,
                    f"Attributes may nest at most {ATTRIBUTES_MAX_DEPTH} levels",
                    ErrorCode.INVALID_INPUT,
                )
            ]
        if isinstance(node, dict):
            if not all(isinstance(k, str) for k in node):
                return [FieldError(field, "Attribute keys must be strings", ErrorCode.INVALID_INPUT)]
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    try:
        size = len(json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode())
    except (TypeError, ValueError):
        return [FieldError(field, "Attributes must contain only JSON values", ErrorCode.INVALID_INPUT)]
    if size > ATTRIBUTES_MAX_BYTES:
        return [
            FieldError(field, f"Attributes must be at most {ATTRIBUTES_MAX_BYTES} bytes", ErrorCode.TOO_LONG)
        ]
    return timezones.attribute_errors(value, field)
