"""HTML to readable plain text, link extraction, and a plain-text Jinja template derived from HTML once.

Converting every recipient's rendered HTML with ``html.parser`` costs milliseconds per newsletter; instead the
text alternative is derived once from the *unrendered* HTML, with each Jinja construct swapped for a sentinel
that the converter carries through, then turned back into Jinja. Statements (``{% if %}``, ``{% for %}``) are
kept wherever they were, even inside attributes, comments or the head, so the block structure stays intact;
expressions survive where their text would be visible (body text and shown link targets).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

from emailkit.domain.content.rendering.constructs import Construct, Kind, Literal, escape_literal, segments

_EXPR_OPEN, _EXPR_CLOSE, _STMT_OPEN, _STMT_CLOSE = "\ue000", "\ue001", "\ue002", "\ue003"
_STATEMENT = re.compile(f"{_STMT_OPEN}\\d+{_STMT_CLOSE}")
_SENTINEL = re.compile(f"([{_EXPR_OPEN}{_STMT_OPEN}])(\\d+)[{_EXPR_CLOSE}{_STMT_CLOSE}]")
# Spacing is written as markers and resolved only after rendering, so spacing around Jinja code merges the way
# a browser merges it: an {% if %} that renders nothing or the seam between two loop iterations adds no blank
# line, and an empty placeholder at the start of a line leaves no indent. Private-use characters, not
# whitespace, so Jinja's whitespace control ("{{-") cannot strip them.
_HARD_SPACE, _HARD_BREAK, _LINE_MARK, _PARA_MARK = "\ue010", "\ue011", "\ue012", "\ue013"
_INTERNAL = re.compile("[\ue000-\ue013]")
# Every whitespace character but the plain space; checked with `in`, which is far cheaper than a regex scan.
_ODD_SPACES = tuple(ch for ch in map(chr, range(0x3001)) if ch.isspace() and ch != " ")
_ODD_WHITESPACE = re.compile(r"[^\S ]\s*")
_SPACES = re.compile(r"\s+")
_TRAILING = re.compile(r"[ \t]+(?=\n|$)")
_BLANK_LINES = re.compile(r"\n{3,}")
_HIDDEN = re.compile(r"display\s*:\s*none", re.IGNORECASE)
_WS_CONTROL_OPEN = re.compile(r"^\{%[-+]?")
_WS_CONTROL_CLOSE = re.compile(r"[-+]?%\}$")

_SKIPPED = frozenset({"head", "style", "script", "title", "template", "noscript"})
_VOID = frozenset("area base br col embed hr img input link meta param source track wbr keygen".split())
_PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "dl", "figure"})
_LINE = frozenset(
    """div tr table li dt dd section article header footer nav address center form fieldset
    figcaption main aside caption ul ol""".split()
)
_CELL = frozenset({"td", "th"})
_NO_TARGET = ("#", "javascript:", "data:", "vbscript:")


def tidy_text(text: str) -> str:
    """Resolve the spacing markers of converted HTML: whitespace collapsed, at most one blank line in a row.

    Runs once per recipient on the derived text, so it sticks to str methods (C loops) over regex scans.
    """
    if any(ch in text for ch in _ODD_SPACES):
        text = _ODD_WHITESPACE.sub(" ", text)
    while "  " in text:
        text = text.replace("  ", " ")
    for mark in (_LINE_MARK, _PARA_MARK, _HARD_BREAK):
        for spaced in (" " + mark, mark + " "):
            if spaced in text:
                text = text.replace(spaced, mark)
    # Line breaks merge into each other and into paragraph breaks; what remains maps to newlines.
    while _LINE_MARK + _LINE_MARK in text:
        text = text.replace(_LINE_MARK + _LINE_MARK, _LINE_MARK)
    text = text.replace(_LINE_MARK + _PARA_MARK, _PARA_MARK).replace(_PARA_MARK + _LINE_MARK, _PARA_MARK)
    text = text.replace(_PARA_MARK, "\n\n").replace(_LINE_MARK, "\n").replace(_HARD_BREAK, "\n")
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.replace(_HARD_SPACE, " ").strip()


def tidy_plain_text(text: str) -> str:
    """A hand-written text alternative keeps its lines; only trailing spaces and extra blank lines go."""
    return _BLANK_LINES.sub("\n\n", _TRAILING.sub("", text)).strip()


@dataclass
class _OpenLink:
    href: str
    start: int  # where the link's text starts in the writer's output
    has_image: bool = False


class _TextWriter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.pending_break = 0
        self.pending_space = False
        self.line_start = True
        self.skip: list[str] = []
        self.lists: list[list[int | str]] = []
        self.links: list[_OpenLink] = []
        self.pre = 0

    # Output primitives ------------------------------------------------------------------------------------
    def _flush(self) -> None:
        if self.pending_break and self.out:
            self.out.append(_PARA_MARK if self.pending_break > 1 else _LINE_MARK)
            self.line_start = True
        elif self.pending_space and not self.line_start:
            # A plain space: tidy_text folds doubles and drops those next to a line break.
            self.out.append(" ")
        self.pending_break = 0
        self.pending_space = False

    def _write(self, text: str) -> None:
        self._flush()
        self.out.append(text)
        self.line_start = False

    def _block(self, newlines: int) -> None:
        if self.out:
            self.pending_break = max(self.pending_break, newlines)
        self.pending_space = False

    def _statement(self, statement: str) -> None:
        # Spacing owed so far goes before the statement, so it is not repeated by a loop or lost by an if.
        self._flush()
        self.out.append(statement)

    def _keep_statements(self, text: str | None) -> None:
        if text:
            for statement in _STATEMENT.findall(text):
                self._statement(statement)

    def _text(self, data: str) -> None:
        if self.pre:
            self._write(data.replace("\n", _HARD_BREAK).replace(" ", _HARD_SPACE).replace("\t", _HARD_SPACE))
            return
        collapsed = _SPACES.sub(" ", data)
        if not collapsed.strip():
            if collapsed:
                self.pending_space = True
            return
        if collapsed[0] == " ":
            self.pending_space = True
        self._write(collapsed.strip())
        self.pending_space = collapsed[-1] == " "

    # Parser callbacks -------------------------------------------------------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for name, value in attrs:
            self._keep_statements(name)
            if not (tag == "a" and name == "href"):
                self._keep_statements(value)
        if self.skip:
            if tag not in _VOID:
                self.skip.append(tag)
            self._keep_statements(attributes.get("href"))
            return
        hidden = "hidden" in attributes or bool(_HIDDEN.search(attributes.get("style") or ""))
        if tag in _SKIPPED or hidden:
            if tag not in _VOID:
                self.skip.append(tag)
            self._keep_statements(attributes.get("href"))
            return
        self._open(tag, attributes)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def _open(self, tag: str, attributes: dict[str, str | None]) -> None:
        if tag == "br":
            self._flush()
            self.out.append(_HARD_BREAK)
            self.line_start = True
        elif tag == "hr":
            self._block(2)
            self._write("-" * 20)
            self._block(2)
        elif tag == "a":
            self.links.append(_OpenLink(attributes.get("href") or "", len(self.out)))
        elif tag == "img":
            self._open_image(attributes.get("alt"))
        elif tag in _CELL:
            if not self.line_start:
                self.pending_space = True
        elif tag in ("ul", "ol"):
            self._open_list(tag, attributes.get("start"))
        elif tag == "li":
            self._open_item()
        elif tag in _PARAGRAPH:
            self._open_paragraph(tag)
        elif tag in _LINE:
            self._block(1)

    def _open_image(self, alt: str | None) -> None:
        # An image shows as text only inside a link: its alt text joins the label (without one, see _close_link).
        if self.links:
            self.links[-1].has_image = True
        if self.links and alt:
            self._text(alt)

    def _open_list(self, tag: str, start: str | None) -> None:
        self._block(1 if self.lists else 2)
        start = start or "1"
        self.lists.append([tag, int(start) - 1 if start.isdigit() else 0])

    def _open_item(self) -> None:
        self._block(1)
        indent = _HARD_SPACE * 2 * max(len(self.lists) - 1, 0)
        if self.lists and self.lists[-1][0] == "ol":
            number = int(self.lists[-1][1]) + 1
            self.lists[-1][1] = number
            self._write(f"{indent}{number}. ")
        else:
            self._write(f"{indent}- ")
        self.line_start = True

    def _open_paragraph(self, tag: str) -> None:
        self._block(2)
        if tag == "pre":
            self.pre += 1
        elif tag[0] == "h" and tag[1:].isdigit():
            self._write("#" * int(tag[1:]) + " ")
            self.line_start = True

    def handle_endtag(self, tag: str) -> None:
        if self.skip:
            if tag in self.skip:
                del self.skip[len(self.skip) - 1 - self.skip[::-1].index(tag) :]
            return
        if tag == "a" and self.links:
            self._close_link()
        elif tag in ("ul", "ol") and self.lists:
            self.lists.pop()
            self._block(1 if self.lists else 2)
        elif tag == "pre" and self.pre:
            self.pre -= 1
            self._block(2)
        elif tag in _PARAGRAPH:
            self._block(2)
        elif tag in _LINE:
            self._block(1)

    def _close_link(self) -> None:
        link = self.links.pop()
        label = _INTERNAL.sub(" ", _STATEMENT.sub("", "".join(self.out[link.start :]))).strip()
        target = link.href.strip()
        shown = target and not target.lower().startswith(_NO_TARGET) and label != _STATEMENT.sub("", target)
        # An image without alt text is decoration (a social icon next to its labelled link): no bare URL.
        if shown and (label or not link.has_image):
            self.pending_space = self.pending_space or bool(label)
            self._write(f"({target})" if label else target)
            self.pending_space = True
        else:
            self._keep_statements(link.href)

    def handle_data(self, data: str) -> None:
        if self.skip:
            self._keep_statements(data)
            return
        pos = 0
        for m in _STATEMENT.finditer(data):
            self._text(data[pos : m.start()])
            self._statement(m.group())
            pos = m.end()
        self._text(data[pos:])

    def handle_comment(self, data: str) -> None:
        self._keep_statements(data)

    def text(self) -> str:
        return "".join(self.out)


def _convert(html: str) -> str:
    writer = _TextWriter()
    writer.feed(html)
    writer.close()
    return writer.text()


def html_to_text(html: str) -> str:
    """Readable plain text for the text/plain alternative of an HTML email.

    Links become ``text (url)``, headings ``# Title``, list items ``- item`` or ``1. item``, paragraphs are
    separated by a blank line; head, style, script and hidden elements (such as a preheader) are dropped and
    whitespace is collapsed as a browser would.
    """
    return tidy_text(_convert(_INTERNAL.sub("", html)))


def text_template_source(html: str) -> str:
    """The plain-text Jinja source whose render equals ``html_to_text`` of the HTML template's render."""
    table: dict[str, int] = {}
    texts: list[str] = []
    parts: list[str] = []

    def sentinel(text: str, opener: str, closer: str) -> str:
        if text not in table:
            table[text] = len(texts)
            texts.append(text)
        return f"{opener}{table[text]}{closer}"

    for seg in segments(html):
        if isinstance(seg, Literal):
            parts.append(_INTERNAL.sub("", seg.text))
        elif seg.kind is Kind.EXPRESSION:
            parts.append(sentinel(seg.text, _EXPR_OPEN, _EXPR_CLOSE))
        elif seg.kind is Kind.STATEMENT:
            parts.append(sentinel(_statement_without_ws_control(seg), _STMT_OPEN, _STMT_CLOSE))
    # Markers stay in the template; CompiledContent resolves them with tidy_text after each render.
    converted = _convert("".join(parts))
    out: list[str] = []
    pos = 0
    for m in _SENTINEL.finditer(converted):
        out.append(escape_literal(converted[pos : m.start()]))
        out.append(texts[int(m.group(2))])
        pos = m.end()
    out.append(escape_literal(converted[pos:]))
    return "".join(out)


def _statement_without_ws_control(seg: Construct) -> str:
    # The converter decides the spacing of the text; "{%-" would glue words across a paragraph break.
    return _WS_CONTROL_CLOSE.sub("%}", _WS_CONTROL_OPEN.sub("{%", seg.text))


class _LinkCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: dict[str, None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("a", "area"):
            href = (dict(attrs).get("href") or "").strip()
            if href.lower().startswith(("http://", "https://")):
                self.links.setdefault(href, None)


def extract_links(html: str) -> list[str]:
    """Unique http(s) targets of ``<a>`` and ``<area>`` in document order (mailto:, tel:, anchors skipped)."""
    collector = _LinkCollector()
    collector.feed(html)
    collector.close()
    return list(collector.links)
