"""Bounds on one template render: what any caller's template may cost the process that renders it.

A template is code written by API callers and run by the API (previews, validation) and by the workers (once
per recipient). Without bounds one expression can hold the interpreter for hours (``9**64**64``, a single C
call that never checks for signals) or build gigabytes (``'x'|center(300000000)``, a loop printing 100 KB ten
thousand times). Two kinds of check keep every render cheap:

* per operation, before it runs: integer results, string widths and repeats, formatting widths and
  precisions, joins and replacements are sized from their operands and refused when too large;
* per render, as it runs: loop iterations, the text built (output, ``{% set %}`` blocks, macros, operators)
  and wall time are counted in a :class:`RenderBudget` that the render installs for its thread.

A render over a bound raises :class:`TemplateLimitExceeded` (TEMPLATE_LIMIT for the caller). The bounds are
generous for real newsletters, which render in well under a millisecond and produce tens of kilobytes.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from typing import Any, NoReturn

#: Characters one template render may output (a subject, an HTML body or a text alternative).
MAX_OUTPUT_CHARS = 5_000_000
#: Characters one render may build in all: output, ``{% set %}`` blocks, macro results, operator results.
MAX_BUILT_CHARS = 25_000_000
#: Size of any single string an operation may produce (a width, a repeat, a replace, a join, a format).
MAX_STRING_CHARS = MAX_OUTPUT_CHARS
#: Items of any list or tuple an operation may produce (``[x] * n``, ``batch``, ``slice``).
MAX_SEQUENCE = 100_000
#: Iterations of all ``{% for %}`` loops of one render together, nested loops included.
MAX_LOOP_ITERATIONS = 100_000
#: Bits of an integer an operation may produce (about 3,000 decimal digits).
MAX_INT_BITS = 10_000
#: Wall time of one template render, in seconds.
RENDER_TIMEOUT_SECONDS = 2.0
#: Indentation of ``tojson``: every nesting level multiplies it.
MAX_JSON_INDENT = 16

# Loop iterations between two looks at the clock.
_CLOCK_EVERY = 16
# Output pieces taken from a render between two checks of its size: per chunk rather than per piece keeps
# the common render (a few dozen pieces) on C-level joins. Expressions printing more than
# ``LARGE_OUTPUT_CHARS`` are counted one by one as they are produced (see ``jinja._finalize``), so a chunk
# holds at most this many small pieces (or literal text of the template itself) before its size is known.
_PIECES_PER_CHECK = 32
LARGE_OUTPUT_CHARS = 4096
_END = object()


class TemplateLimitExceeded(Exception):
    """A render went over one of the bounds above; nothing it built is kept."""


class RenderTimeout(TemplateLimitExceeded):
    """A render ran out of wall time (worth no second attempt, not even to find the line)."""


class RenderBudget:
    """What one render has spent so far; installed for the rendering thread by :func:`render_stream`."""

    __slots__ = ("built", "deadline", "iterations")

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.deadline = time.monotonic() + RENDER_TIMEOUT_SECONDS
        self.iterations = 0
        self.built = 0

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise RenderTimeout(
                f"rendering took longer than {RENDER_TIMEOUT_SECONDS:g} s, the limit for one template"
            )

    def build(self, chars: int) -> None:
        self.built += chars
        if self.built > MAX_BUILT_CHARS:
            self.over_built()

    def over_built(self) -> NoReturn:
        raise TemplateLimitExceeded(
            f"the template built more than {MAX_BUILT_CHARS:,} characters of text in one render"
        )

    def iterate(self, iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            self.iterations += 1
            if self.iterations % _CLOCK_EVERY == 0:
                if self.iterations > MAX_LOOP_ITERATIONS:
                    raise TemplateLimitExceeded(
                        f"loops ran more than {MAX_LOOP_ITERATIONS:,} iterations in one render"
                    )
                self.check_time()
            yield item


class _State(threading.local):
    budget: RenderBudget | None = None


#: The budget of the render running in this thread, if any.
render_state = _State()
_state = render_state


def current_budget() -> RenderBudget | None:
    return _state.budget


def render_stream(pieces: Iterable[str]) -> str:
    """Join a template's output as it is produced, under the thread's budget (a fresh one if none is set).

    Output is counted as it is produced, so a render over the bound stops there, not after building it all.
    """
    previous = _state.budget
    if previous is None:
        _state.budget = RenderBudget()
    try:
        iterator = iter(pieces)
        out: list[str] = []
        size = 0
        while True:
            part = "".join(islice(iterator, _PIECES_PER_CHECK))
            if not part:
                # Either the end, or a run of empty pieces: look one piece further to tell.
                piece = next(iterator, _END)
                if piece is _END:
                    return "".join(out)
                part = piece  # type: ignore[assignment]
            size += len(part)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateLimitExceeded(f"the output is longer than {MAX_OUTPUT_CHARS:,} characters")
            out.append(part)
    finally:
        _state.budget = previous


def bounded_concat(pieces: Iterable[str]) -> str:
    """``Environment.concat``: a render's root output (streamed) or a buffer it captured (counted)."""
    budget = _state.budget
    if budget is None:
        # Template.render joins its root generator here: this is the start of a render.
        return render_stream(pieces)
    if not isinstance(pieces, list):
        pieces = list(pieces)
    budget.build(sum(map(len, pieces)))
    budget.check_time()
    return "".join(pieces)


def charge(result: Any) -> Any:
    """Count a string an operation produced against the running render (if one is running)."""
    if isinstance(result, str | bytes):
        size = len(result)
        if size > MAX_STRING_CHARS:
            raise TemplateLimitExceeded(too_long(size))
        budget = _state.budget
        if budget is not None:
            budget.build(size)
            budget.check_time()
    return result


def too_long(size: int) -> str:
    return f"a string of {size:,} characters is over the limit of {MAX_STRING_CHARS:,}"


def check_chars(size: int, what: str) -> None:
    if size > MAX_STRING_CHARS:
        raise TemplateLimitExceeded(
            f"{what} would make {size:,} characters (the limit is {MAX_STRING_CHARS:,})"
        )


def check_items(count: int, what: str) -> None:
    if count > MAX_SEQUENCE:
        raise TemplateLimitExceeded(f"{what} would make {count:,} items (the limit is {MAX_SEQUENCE:,})")


def _int_bits(value: Any) -> int | None:
    return abs(value).bit_length() if isinstance(value, int) else None


def check_power(base: Any, exponent: Any) -> None:
    bits = _int_bits(base)
    if bits is None or not isinstance(exponent, int) or exponent <= 0 or bits <= 1:
        return
    if bits * exponent > MAX_INT_BITS:
        raise TemplateLimitExceeded(
            f"the power would have about {bits * exponent:,} bits (the limit is {MAX_INT_BITS:,})"
        )


def _sized(value: Any) -> tuple[int, bool] | None:
    """(size, is text) of a string or a sequence."""
    if isinstance(value, str | bytes):
        return len(value), True
    if isinstance(value, list | tuple):
        return len(value), False
    return None


def check_product(left: Any, right: Any) -> None:
    left_bits, right_bits = _int_bits(left), _int_bits(right)
    if left_bits is not None and right_bits is not None:
        if left_bits + right_bits > MAX_INT_BITS:
            raise TemplateLimitExceeded(
                f"the product would have about {left_bits + right_bits:,} bits (the limit is {MAX_INT_BITS:,})"
            )
        return
    for seq, times in ((left, right), (right, left)):
        sized = _sized(seq)
        if sized is not None and isinstance(times, int):
            size, text = sized
            if text:
                check_chars(size * times, "repeating a string")
            else:
                check_items(size * times, "repeating a sequence")


def check_sum(left: Any, right: Any) -> None:
    a, b = _sized(left), _sized(right)
    if a is not None and b is not None:
        if a[1]:
            check_chars(a[0] + b[0], "joining two strings")
        else:
            check_items(a[0] + b[0], "joining two sequences")


# printf-style conversions: %[(key)][flags][width][.precision][length]type
_PRINTF = re.compile(r"%(?:\(([^)]*)\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.)", re.DOTALL)


def check_printf(fmt: str, values: Any) -> None:
    """Refuse ``'%0300000000d' % 1`` and ``'%*d' % (300000000, 1)`` before Python builds the result."""
    positional = list(values) if isinstance(values, tuple) else [values]
    index = 0
    for m in _PRINTF.finditer(fmt):
        for part in (m.group(2), m.group(3)):
            if not part:
                continue
            if part == "*":
                value = positional[index] if index < len(positional) else 0
                index += 1
                size = abs(value) if isinstance(value, int) else 0
            else:
                size = int(part) if len(part) <= 12 else MAX_STRING_CHARS + 1
            check_chars(size, "a format width or precision")
        if m.group(4) != "%" and m.group(1) is None:
            index += 1


_SPEC_NUMBER = re.compile(r"\d+")


def check_format_spec(spec: str) -> None:
    """Widths and precisions of ``str.format`` (``'{:>300000000}'``, ``'{:.300000000f}'``)."""
    for number in _SPEC_NUMBER.findall(spec):
        size = int(number) if len(number) <= 12 else MAX_STRING_CHARS + 1
        check_chars(size, "a format width or precision")


def _occurrences(text: str | bytes, old: Any, count: int) -> int:
    found = len(text) + 1 if not old else text.count(old)
    return found if count < 0 else min(found, count)


def check_replace(text: Any, old: Any, new: Any, count: Any = -1) -> None:
    if isinstance(text, str | bytes) and isinstance(new, str | bytes) and isinstance(count, int):
        try:
            times = _occurrences(text, old, count)
        except TypeError:
            return
        check_chars(len(text) + times * max(len(new) - len(old or ""), 0), "the replacement")


def check_join(separator: Any, items: list[Any]) -> None:
    sep = len(separator) if isinstance(separator, str | bytes) else len(str(separator))
    total = sep * max(len(items) - 1, 0)
    check_chars(total, "joining")
    total += sum(len(i) if isinstance(i, str | bytes) else 0 for i in items)
    check_chars(total, "joining")


def check_translate(text: str, table: Any) -> None:
    if not isinstance(table, Mapping):
        return
    longest = max((len(v) for v in table.values() if isinstance(v, str)), default=1)
    check_chars(len(text) * longest, "translating")


def check_expandtabs(text: str | bytes, tabsize: Any = 8) -> None:
    if isinstance(tabsize, int):
        tab = "\t" if isinstance(text, str) else b"\t"
        check_chars(len(text) + text.count(tab) * max(tabsize, 0), "expanding tabs")  # type: ignore[arg-type]


def check_width(width: Any) -> None:
    if isinstance(width, int):
        check_chars(width, "padding to this width")
