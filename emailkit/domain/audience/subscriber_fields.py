"""What a subscriber's own fields may hold: the name's length, and the attributes, a JSON object with string
keys bounded in depth and size, whose ``timezone`` (if any) is an IANA name. The API's writes and the CSV
import's rows check the same limits.
"""

from __future__ import annotations

from emailkit.domain.audience import timezones
from emailkit.domain.errors import FieldError
from emailkit.domain.validation import json_object_errors

NAME_MAX = 255
ATTRIBUTES_MAX_BYTES = 64 * 1024
ATTRIBUTES_MAX_DEPTH = 10


def attribute_errors(value: object, field: str = "attributes") -> list[FieldError]:
    """Problems with a subscriber's attributes: a JSON object with string keys, bounded in size and depth."""
    errors = json_object_errors(
        value, field, what="Attributes", max_bytes=ATTRIBUTES_MAX_BYTES, max_depth=ATTRIBUTES_MAX_DEPTH
    )
    if errors or not isinstance(value, dict):
        return errors
    return timezones.attribute_errors(value, field)
