"""Locating Jinja constructs (``{{ }}``, ``{% %}``, ``{# #}``) inside markup, with their offsets.

Run only on sources that Jinja has already parsed, so delimiters are balanced; string literals inside a
construct are honoured, so ``{{ "}}" }}`` is one construct. ``{% raw %}`` blocks are literal text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

_OPEN = re.compile(r"\{[{%#]")
_RAW_START = re.compile(r"\{%[-+]?\s*raw\s*[-+]?%\}")
_RAW_END = re.compile(r"\{%[-+]?\s*endraw\s*[-+]?%\}")


class Kind(Enum):
    EXPRESSION = "{{"
    STATEMENT = "{%"
    COMMENT = "{#"
    # The ``{% raw %}`` and ``{% endraw %}`` tags themselves; what they enclose is a Literal.
    RAW = "raw"


_CLOSE = {Kind.EXPRESSION: "}}", Kind.STATEMENT: "%}", Kind.COMMENT: "#}"}


@dataclass(frozen=True)
class Construct:
    kind: Kind
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Literal:
    start: int
    end: int
    text: str


Segment = Construct | Literal


def _construct_end(source: str, start: int, kind: Kind) -> int:
    close = _CLOSE[kind]
    if kind is Kind.COMMENT:
        found = source.find(close, start + 2)
        return len(source) if found < 0 else found + 2
    i, quote = start + 2, ""
    while i < len(source):
        ch = source[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif source.startswith(close, i):
            return i + 2
        i += 1
    return len(source)


def segments(source: str) -> list[Segment]:
    """Split ``source`` into literal text and Jinja constructs, in order, covering every character."""
    out: list[Segment] = []
    pos = 0
    literal_from = 0
    while True:
        m = _OPEN.search(source, pos)
        if m is None:
            break
        start = m.start()
        raw = _RAW_START.match(source, start)
        if raw is not None:
            end_tag = _RAW_END.search(source, raw.end())
            if literal_from < start:
                out.append(Literal(literal_from, start, source[literal_from:start]))
            out.append(Construct(Kind.RAW, start, raw.end(), raw.group()))
            body_end = end_tag.start() if end_tag else len(source)
            if raw.end() < body_end:
                out.append(Literal(raw.end(), body_end, source[raw.end() : body_end]))
            if end_tag is not None:
                out.append(Construct(Kind.RAW, end_tag.start(), end_tag.end(), end_tag.group()))
            pos = literal_from = end_tag.end() if end_tag else len(source)
            continue
        kind = Kind(m.group())
        end = _construct_end(source, start, kind)
        if literal_from < start:
            out.append(Literal(literal_from, start, source[literal_from:start]))
        out.append(Construct(kind, start, end, source[start:end]))
        pos = literal_from = end
    if literal_from < len(source):
        out.append(Literal(literal_from, len(source), source[literal_from:]))
    return out


def constructs(source: str) -> list[Construct]:
    return [s for s in segments(source) if isinstance(s, Construct)]


def line_of(source: str, offset: int) -> int:
    return source.count("\n", 0, offset) + 1


_NEEDS_ESCAPE = re.compile(r"\{(?=[{%#])")


def escape_literal(text: str) -> str:
    """Make literal text safe to embed in a Jinja template (it must not open a construct)."""
    return _NEEDS_ESCAPE.sub("{{ '{' }}", text)
