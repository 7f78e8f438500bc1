"""Short lines for compiled MJML, so that messages go out ``7bit`` rather than base64.

MJML writes a whole section on one line, often several KB long, and a body line over 998 octets
(RFC 5322 2.1.1) forces the HTML part into base64: a third more bytes on the wire and the costliest step of
assembling each message. Lines are broken, once per template, only where HTML cannot tell the difference:
the whitespace between two attributes of a start tag (any whitespace separates attributes, a newline as
well as a space). Text, attribute values, comments' text and raw-text elements (``<style>``, ``<script>``,
``<title>``, ``<textarea>``) are never touched, and neither is a tag that contains a Jinja construct, whose
rendered form is not known here. A line that has no such break point stays as long as it is.
"""

from __future__ import annotations

import re

from emailkit.domain.content.rendering.constructs import Construct, segments

#: A line is broken at the first break point past this many characters. Well under the 998-octet limit,
#: so that placeholders rendering longer than their source rarely push a line over it.
FOLD_AFTER = 300

_MASK = "\x00"
# A start tag with no construct in it (constructs are masked with NULs, which the grammar rejects).
_START_TAG = re.compile(
    r"""<[A-Za-z][A-Za-z0-9:-]*"""
    r"""(?:\s+[^\s"'>/=\x00]+(?:\s*=\s*(?:"[^"\x00]*"|'[^'\x00]*'|[^\s"'=<>`\x00]+))?)*"""
    r"""\s*/?>"""
)
_TAG_NAME = re.compile(r"<[A-Za-z][A-Za-z0-9:-]*")
# One attribute with the whitespace before it (group 1), inside a tag already matched by _START_TAG.
_ATTRIBUTE = re.compile(r"""(\s+)[^\s"'>/=]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'=<>`]+))?""")
_RAW_TEXT = re.compile(
    r"<(style|script|title|textarea|xmp|iframe|noembed|noframes|noscript|plaintext)\b.*?(?:</\1\s*>|\Z)",
    re.IGNORECASE | re.DOTALL,
)


def _masked(source: str) -> str:
    """The source with every Jinja construct and raw-text element replaced by NULs (same offsets)."""
    parts = [
        _MASK * (seg.end - seg.start) if isinstance(seg, Construct) else seg.text for seg in segments(source)
    ]
    masked = "".join(parts)
    return _RAW_TEXT.sub(lambda m: _MASK * len(m.group()), masked)


def fold_lines(source: str, after: int = FOLD_AFTER) -> str:
    """``source`` with lines longer than ``after`` broken between tag attributes where possible."""
    if not any(len(line) > after for line in source.split("\n")):
        return source
    if _MASK in source:
        return source
    masked = _masked(source)
    out: list[str] = []
    copied = 0
    line_start = 0
    for tag in _START_TAG.finditer(masked):
        name = _TAG_NAME.match(masked, tag.start())
        assert name is not None
        pos = name.end()
        while (attribute := _ATTRIBUTE.match(masked, pos, tag.end())) is not None:
            pos = attribute.end()
            gap_start, gap_end = attribute.span(1)
            newline = source.rfind("\n", line_start, gap_start)
            if newline >= 0:
                line_start = newline + 1
            if gap_start - line_start < after:
                continue
            out.append(source[copied:gap_start])
            out.append("\n")
            copied = line_start = gap_end
    if not out:
        return source
    out.append(source[copied:])
    return "".join(out)


_STYLE = re.compile(r"(<style\b[^>]*>)(.*?)(</style\s*>)", re.IGNORECASE | re.DOTALL)


def indent_style_dots(source: str) -> str:
    """``source`` with a space before every ``<style>`` line that starts with ``.`` (a CSS class selector).

    SMTP doubles a line's leading dot (RFC 5321 4.5.2): one such line in a template costs every message a copy
    of its whole body. CSS ignores the space. Style blocks holding Jinja code are left alone.
    """
    if "\n." not in source:
        return source

    def indent(m: re.Match[str]) -> str:
        css = m.group(2)
        if "{{" in css or "{%" in css or "\n." not in css:
            return m.group(0)
        return m.group(1) + css.replace("\n.", "\n .") + m.group(3)

    spaced = _STYLE.sub(indent, source)
    return source if spaced == source else spaced
