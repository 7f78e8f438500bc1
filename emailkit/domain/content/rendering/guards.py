"""Bounded versions of what templates can call: string methods, filters and ``str.format`` fields.

Each checks, before Python builds the result, that the result stays within :mod:`limits`, and counts what it
built against the running render. Only what can make text or sequences grow is wrapped; ``default``,
``length`` and the like stay on the fast path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from types import BuiltinMethodType, MethodType
from typing import Any

from jinja2 import filters as jf
from jinja2 import pass_environment, pass_eval_context
from jinja2.utils import Namespace

from emailkit.domain.content.rendering.limits import (
    MAX_JSON_INDENT,
    MAX_STRING_CHARS,
    TemplateLimitExceeded,
    charge,
    check_chars,
    check_expandtabs,
    check_format_spec,
    check_items,
    check_join,
    check_printf,
    check_replace,
    check_translate,
    check_width,
)


def check_stringify(value: Any) -> None:
    """Refuse to turn a container into text when its text would be too long (``[s] * 100000``, printed).

    Walks what the container reaches, counting every reference again (as ``str`` would), and stops as soon
    as the estimate is over the bound, so the walk itself stays cheap.
    """
    if isinstance(value, str) or not isinstance(value, list | tuple | dict | set | frozenset | Namespace):
        return
    total = 0
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item) + 4
        elif isinstance(item, Namespace):
            stack.append(getattr(item, "_Namespace__attrs", {}))
            total += 12
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
            total += 2 + 2 * len(item)
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
            total += 2 + 2 * len(item)
        else:
            total += 24
        if total > MAX_STRING_CHARS:
            raise TemplateLimitExceeded(
                f"printing this {type(value).__name__} would make more than {MAX_STRING_CHARS:,} characters"
            )


# -- string methods ------------------------------------------------------------------------------------


def _join_method(owner: Any, method: Callable[..., Any], iterable: Any) -> Any:
    items = list(iterable)
    for item in items:
        check_stringify(item)
    check_join(owner, items)
    return method(items)


_METHOD_CHECKS: dict[str, Callable[..., None]] = {
    "center": lambda owner, width=0, *_: check_width(width),
    "ljust": lambda owner, width=0, *_: check_width(width),
    "rjust": lambda owner, width=0, *_: check_width(width),
    "zfill": lambda owner, width=0: check_width(width),
    "expandtabs": lambda owner, tabsize=8: check_expandtabs(owner, tabsize),
    "replace": lambda owner, old="", new="", count=-1: check_replace(owner, old, new, count),
    "translate": lambda owner, table=None: check_translate(owner, table) if isinstance(owner, str) else None,
}


def bounded_method(value: Any) -> Callable[..., Any] | None:
    """A bounded stand-in for a string method that can grow its result, or None to leave it as it is."""
    if not isinstance(value, MethodType | BuiltinMethodType):
        return None
    name, owner = value.__name__, getattr(value, "__self__", None)
    if name == "to_bytes" and isinstance(owner, int):

        def to_bytes(length: int = 1, *args: Any, **kwargs: Any) -> Any:
            if isinstance(length, int):
                check_chars(length, "to_bytes")
            return value(length, *args, **kwargs)

        return to_bytes
    if not isinstance(owner, str | bytes | bytearray):
        return None
    if name == "join":
        return functools.partial(_join_method, owner, value)
    check = _METHOD_CHECKS.get(name)
    if check is None:
        return None

    def bounded(*args: Any, **kwargs: Any) -> Any:
        try:
            check(owner, *args, **kwargs)
        except TypeError:
            pass  # wrong arguments: let the method itself say what is wrong
        return charge(value(*args, **kwargs))

    return bounded


# -- filters ---------------------------------------------------------------------------------------------


def _stringifying(original: Callable[..., Any], passes: int) -> Callable[..., Any]:
    """A filter whose input becomes text: refuse a container too large to print, count the result."""

    @functools.wraps(original)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if len(args) > passes:
            check_stringify(args[passes])
        return charge(original(*args, **kwargs))

    return bounded


def _center(value: Any, width: int = 80) -> Any:
    check_stringify(value)
    check_width(width)
    return charge(jf.do_center(value, width))


def _indent(s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> Any:
    check_stringify(s)
    text = str(s)
    step = width if isinstance(width, int) else len(str(width))
    check_chars(len(text) + (text.count("\n") + 1) * max(step, 0), "indenting")
    return charge(jf.do_indent(s, width, first, blank))


@pass_environment
def _wordwrap(environment: Any, s: Any, width: int = 79, *args: Any, **kwargs: Any) -> Any:
    check_stringify(s)
    wrapstring = kwargs.get("wrapstring", args[1] if len(args) > 1 else None)
    wrap = len(str(wrapstring)) if wrapstring is not None else len(environment.newline_sequence)
    text = str(s)
    check_chars(len(text) + (len(text) + 1) * wrap, "wrapping")
    return charge(jf.do_wordwrap(environment, s, width, *args, **kwargs))


def _format(value: Any, *args: Any, **kwargs: Any) -> Any:
    values = kwargs or args
    for v in values.values() if isinstance(values, Mapping) else values:
        check_stringify(v)
    check_printf(str(value), values)
    return charge(jf.do_format(value, *args, **kwargs))


@pass_eval_context
def _replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: int | None = None) -> Any:
    check_stringify(s)
    check_replace(str(s), str(old), str(new), -1 if count is None else count)
    return charge(jf.do_replace(eval_ctx, s, old, new, count))


@pass_eval_context
def _join(eval_ctx: Any, value: Any, d: str = "", attribute: str | int | None = None) -> Any:
    items = list(value)
    if attribute is not None:
        items = list(map(jf.make_attrgetter(eval_ctx.environment, attribute), items))
    for item in items:
        check_stringify(item)
    check_join(d, [str(i) for i in items])
    return charge(jf.sync_do_join(eval_ctx, items, d))


def _batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
    check_items(linecount if isinstance(linecount, int) else 0, "batch")
    return jf.do_batch(value, linecount, fill_with)


def _slice(value: Any, slices: int, fill_with: Any = None) -> Any:
    check_items(slices if isinstance(slices, int) else 0, "slice")
    return jf.sync_do_slice(value, slices, fill_with)


@pass_eval_context
def _tojson(eval_ctx: Any, value: Any, indent: int | None = None) -> Any:
    if isinstance(indent, int) and indent > MAX_JSON_INDENT:
        raise TemplateLimitExceeded(f"tojson indents by at most {MAX_JSON_INDENT}")
    check_stringify(value)
    return charge(jf.do_tojson(eval_ctx, value, indent))


@pass_environment
def _sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    if isinstance(start, list | tuple):
        items = list(iterable)
        check_items(len(start) + sum(len(i) for i in items if isinstance(i, list | tuple)), "sum")
        iterable = items
    return jf.sync_do_sum(environment, iterable, attribute, start)


def _list(value: Any) -> Any:
    if isinstance(value, str):
        check_items(len(value), "list")
    return jf.sync_do_list(value)


# Filters that turn their input into text, by the number of leading context arguments they take.
_STRINGIFYING = {
    "capitalize": 0,
    "e": 0,
    "escape": 0,
    "forceescape": 0,
    "lower": 0,
    "pprint": 0,
    "safe": 0,
    "string": 0,
    "striptags": 0,
    "title": 0,
    "trim": 0,
    "truncate": 1,
    "upper": 0,
    "urlencode": 0,
    "urlize": 1,
    "wordcount": 0,
    "xmlattr": 1,
}


def bounded_filters(filters: Mapping[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """Replacements for the environment's filters that can make text or sequences grow."""
    out: dict[str, Callable[..., Any]] = {
        name: _stringifying(filters[name], passes)
        for name, passes in _STRINGIFYING.items()
        if name in filters
    }
    out.update(
        center=_center,
        indent=_indent,
        wordwrap=_wordwrap,
        format=_format,
        replace=_replace,
        join=_join,
        batch=_batch,
        slice=_slice,
        tojson=_tojson,
        sum=_sum,
        list=_list,
    )
    return out


class BoundedFormatMixin:
    """For the sandbox's ``str.format`` formatters: widths, precisions and values within the bounds."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        check_format_spec(format_spec)
        check_stringify(value)
        return charge(super().format_field(value, format_spec))  # type: ignore[misc]
