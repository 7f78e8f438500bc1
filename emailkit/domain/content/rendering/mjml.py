"""MJML to HTML with Jinja placeholders kept, and errors that point at a line.

mjml-python (a binding of the Rust ``mrml``) keeps ``{{ }}`` and ``{% %}`` intact in text, in attribute values
and around sections, so the MJML is compiled once per template and Jinja renders the result per recipient. Its
errors carry no line and some constructs break silently, so the source is scanned here first:

* a ``<`` inside Jinja code makes the parser see a tag (``{% if a < 3 %}``);
* a Jinja construct between attributes (``<mj-text {% if x %}color="red"{% endif %}>``) is not markup;
* in an attribute value, a double quote or a line break inside the placeholder is rewritten (``\\"``, ``\\n``)
  and a quote equal to the value's own delimiter ends the value early;
* attributes that mrml computes with at compile time (``width`` of mj-image or mj-column, ``icon-size``...)
  are dropped without a word when their value is a placeholder: found by checking that every placeholder
  survives.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from mjml import mjml2html

from emailkit.domain.content.rendering.constructs import Construct, Kind, constructs, line_of
from emailkit.domain.content.rendering.jinja import at_line
from emailkit.domain.errors import DomainError, ErrorCode, FieldError

VOID_ELEMENTS = frozenset(
    "area base br col embed hr img input link meta param source track wbr keygen".split()
)
# Every element mrml knows; anything else named mj-* is a typo that would be copied into the HTML as is.
MJML_ELEMENTS = frozenset(
    """mjml mj-head mj-body mj-attributes mj-all mj-class mj-breakpoint mj-font mj-html-attributes
    mj-html-attribute mj-selector mj-preview mj-style mj-title mj-accordion mj-accordion-element
    mj-accordion-title mj-accordion-text mj-button mj-carousel mj-carousel-image mj-column mj-divider
    mj-group mj-hero mj-image mj-navbar mj-navbar-link mj-raw mj-section mj-social mj-social-element
    mj-spacer mj-table mj-text mj-wrapper mj-include""".split()
)
_NAME = re.compile(r"[A-Za-z][\w:.-]*")
_ATTR_NAME = re.compile(r"[^\s=>/\"']+")
_POSITION = re.compile(r"\s*in root template at position (\d+):(\d+)")
_PROBE_VALUES = ("1px", "50%", "#010203", "https://example.com/probe", "1", "left")


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


@dataclass(frozen=True)
class Attribute:
    element: str
    name: str
    name_start: int
    value_start: int
    value_end: int
    quote: str

    @property
    def span(self) -> tuple[int, int]:
        # From the attribute name to the closing quote, so the whole attribute can be swapped out.
        return self.name_start, self.value_end + 1


@dataclass
class Scan:
    """What the scanner saw: structural problems (first one wins) and every quoted attribute."""

    problems: list[tuple[int, str]] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    in_tag_constructs: list[Construct] = field(default_factory=list)
    unknown_elements: list[tuple[int, str]] = field(default_factory=list)


class _Scanner:
    def __init__(self, source: str, found: list[Construct]) -> None:
        self.src = source
        # Constructs are blanked out so their content never reads as markup; offsets stay the same.
        chars = list(source)
        for c in found:
            chars[c.start : c.end] = "x" * (c.end - c.start)
        self.text = "".join(chars)
        self.starts = {c.start: c for c in found}
        self.scan = Scan()
        self.stack: list[tuple[str, int]] = []
        self.root_seen = False

    def problem(self, offset: int, message: str) -> None:
        self.scan.problems.append((offset, message))

    def run(self) -> Scan:
        text, i = self.text, 0
        while i < len(text):
            j = text.find("<", i)
            end = len(text) if j < 0 else j
            outside = not self.stack
            if outside and text[i:end].strip():
                where = i + len(text[i:end]) - len(text[i:end].lstrip())
                self.problem(where, "content outside the <mjml> element")
            if j < 0:
                break
            i = self._markup(j)
        if self.stack:
            name, offset = self.stack[-1]
            self.problem(offset, f"<{name}> is never closed")
        if not self.root_seen:
            self.problem(0, "an MJML document must be wrapped in <mjml> ... </mjml>")
        return self.scan

    def _markup(self, j: int) -> int:
        text = self.text
        if text.startswith("<!--", j):
            k = text.find("-->", j + 4)
            if k < 0:
                self.problem(j, "comment is never closed with -->")
                return len(text)
            return k + 3
        if text.startswith("</", j):
            return self._end_tag(j)
        if text.startswith(("<!", "<?"), j):
            self.problem(j, "declarations such as <!DOCTYPE> or <?xml?> are not allowed in MJML")
            k = text.find(">", j)
            return len(text) if k < 0 else k + 1
        m = _NAME.match(text, j + 1)
        if m is None:
            self.problem(j, "a '<' in text must be written as &lt;")
            return j + 1
        return self._start_tag(j, m.group().lower(), m.end())

    def _end_tag(self, j: int) -> int:
        m = _NAME.match(self.text, j + 2)
        close = self.text.find(">", j)
        if m is None or close < 0:
            self.problem(j, "malformed closing tag")
            return len(self.text) if close < 0 else close + 1
        name = m.group().lower()
        names = [n for n, _ in self.stack]
        if names and names[-1] == name:
            self.stack.pop()
        elif name in names:
            open_name, offset = self.stack[-1]
            self.problem(offset, f"<{open_name}> is not closed before </{name}>")
            del self.stack[names.index(name) :]
        else:
            self.problem(j, f"</{name}> closes nothing: no <{name}> is open here")
        return close + 1

    def _start_tag(self, j: int, name: str, i: int) -> int:
        text, src = self.text, self.src
        self._check_element(j, name)
        while True:
            i = _skip_space(text, i)
            if i >= len(text):
                self.problem(j, f"<{name}> tag is never closed with '>'")
                return i
            if text.startswith("/>", i):
                return i + 2
            if text[i] == ">":
                if name not in VOID_ELEMENTS:
                    self.stack.append((name, j))
                return i + 1
            construct = self.starts.get(i)
            if construct is not None:
                self.scan.in_tag_constructs.append(construct)
                i = construct.end
                continue
            m = _ATTR_NAME.match(text, i)
            if m is None:
                self.problem(i, f"unexpected {src[i]!r} in <{name}> tag")
                return i + 1
            after = self._attribute(name, m.group(), i, m.end())
            if after is None:
                return len(text)
            i = after

    def _check_element(self, j: int, name: str) -> None:
        """What the element's name alone tells: outside the root, an unknown mj-* name, mj-include."""
        if not self.stack:
            if name != "mjml" or self.root_seen:
                self.problem(j, f"<{name}> outside the <mjml> element")
            self.root_seen = True
        if name.startswith("mj-") and name not in MJML_ELEMENTS:
            self.scan.unknown_elements.append((j, name))
        if name == "mj-include":
            self.problem(j, "<mj-include> is not supported: put the included MJML in the template itself")

    def _attribute(self, element: str, attr_name: str, attr_start: int, i: int) -> int | None:
        """Read the attribute whose name ends at `i`: where the tag goes on, or None when its value is never
        closed (nothing after it can be read as the tag)."""
        text = self.text
        i = _skip_space(text, i)
        if not text.startswith("=", i):
            return i
        i = _skip_space(text, i + 1)
        quote = text[i : i + 1]
        if quote not in ("'", '"'):
            self.problem(i, f"the value of {attr_name!r} on <{element}> must be in quotes")
            while i < len(text) and not text[i].isspace() and text[i] != ">":
                i += 1
            return i
        close = text.find(quote, i + 1)
        if close < 0:
            self.problem(i, f"the value of {attr_name!r} on <{element}> is never closed")
            return None
        self.scan.attributes.append(Attribute(element, attr_name, attr_start, i + 1, close, quote))
        return close + 1


def _pitfalls(source: str, found: list[Construct], scanned: Scan) -> Iterator[tuple[int, str]]:
    for c in found:
        if c.kind is not Kind.RAW and "<" in c.text:
            yield (
                c.start + c.text.index("<"),
                "'<' inside Jinja code breaks the MJML parser; swap the operands and use '>' "
                "(or the 'lt' test: `a is lt 3`)",
            )
    for c in scanned.in_tag_constructs:
        yield (
            c.start,
            "Jinja code between the attributes of an MJML tag is not allowed; put it inside an attribute "
            'value (color="{% if vip %}red{% else %}black{% endif %}")',
        )
    for attr in scanned.attributes:
        for c in found:
            if not attr.value_start <= c.start < attr.value_end:
                continue
            if '"' in c.text or attr.quote in c.text:
                yield (
                    c.start,
                    f"quotes inside the Jinja code of attribute {attr.name!r} break mjml-python; "
                    f"use single quotes in the placeholder and double quotes around the value",
                )
            elif "\n" in c.text:
                yield (c.start, f"the Jinja code in attribute {attr.name!r} must fit on one line")
    for offset, name in scanned.unknown_elements:
        yield offset, f"<{name}> is not an MJML element"


def _mrml(source: str) -> str | None:
    try:
        return mjml2html(source)
    except Exception:  # a foreign binding: any failure means "does not compile"
        return None


def _mrml_failure(source: str, exc_text: str, scanned: Scan) -> tuple[int | None, str]:
    if scanned.problems:
        offset, message = scanned.problems[0]
        return line_of(source, offset), message
    m = _POSITION.search(exc_text)
    detail = _POSITION.sub("", exc_text).strip() or "invalid MJML"
    if m is None:
        return None, f"MJML could not be compiled: {detail}"
    prefix = source.encode()[: int(m.group(1))].decode(errors="ignore")
    return line_of(source, len(prefix)), f"MJML could not be compiled: {detail}"


def _dropped_attribute_message(source: str, attr: Attribute) -> str:
    start, end = attr.span
    removed = _mrml(source[:start] + source[end:])
    for value in _PROBE_VALUES:
        probed = _mrml(f'{source[:start]}{attr.name}="{value}"{source[end:]}')
        if probed is not None and probed != removed:
            return (
                f"mjml-python drops the templated value of {attr.name!r} on <{attr.element}>: it needs this "
                f'value while compiling, so it must be a literal (e.g. {attr.name}="{value}")'
            )
    return f"<{attr.element}> has no attribute {attr.name!r}; MJML drops it together with its Jinja code"


def _survival_problems(
    source: str, html: str, found: list[Construct], scanned: Scan
) -> Iterator[tuple[int, str]]:
    missing = [c for c in found if c.kind is not Kind.COMMENT and c.text not in html]
    reported: set[int] = set()
    for c in missing:
        attr = next((a for a in scanned.attributes if a.value_start <= c.start < a.value_end), None)
        if attr is None:
            yield c.start, f"MJML drops the Jinja code {c.text[:40]!r}: it sits where MJML outputs nothing"
        elif attr.name_start not in reported:
            reported.add(attr.name_start)
            yield c.start, _dropped_attribute_message(source, attr)


def compile_mjml(source: str, field_name: str) -> str:
    """Compile MJML (whose Jinja already parses) to HTML, or raise MJML_INVALID errors with lines."""
    found = constructs(source)
    scanned = _Scanner(source, found).run()
    # One report per line and kind of problem: an {% if %}...{% endif %} pair is one mistake.
    pitfalls = {(line_of(source, off), msg) for off, msg in _pitfalls(source, found, scanned)}
    if pitfalls:
        raise DomainError(
            [
                FieldError(field_name, at_line(line, msg), ErrorCode.MJML_INVALID)
                for line, msg in sorted(pitfalls)
            ]
        )
    try:
        html = mjml2html(source)
    except Exception as exc:  # mjml-python raises ValueError; any failure of the binding is invalid MJML
        line, message = _mrml_failure(source, str(exc), scanned)
        raise DomainError.single(ErrorCode.MJML_INVALID, at_line(line, message), field_name) from None
    dropped = [
        FieldError(field_name, at_line(line_of(source, offset), message), ErrorCode.MJML_INVALID)
        for offset, message in _survival_problems(source, html, found, scanned)
    ]
    if dropped:
        raise DomainError(dropped)
    return html
