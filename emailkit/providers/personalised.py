"""Batched personalised sends: finding what the messages of one campaign share, so that one API request can
carry many people's messages as one body with per-recipient substitutions (SendGrid ``substitutions``,
Mailgun ``recipient-variables``).

The pipeline hands providers fully rendered messages; each carries the per-person values it was rendered with
(``OutgoingMessage.personal``: its unsubscribe URL, tracked links, name, ...). :func:`factor` cuts a rendered
text at every occurrence of those values into a *shape*, the literal text between them and the names of the
values that go in between, and the person's own values. Messages with equal shapes can share one body whose
slots the provider fills per recipient.

Why this is safe rather than clever: a shape is cut from the person's own rendering, so putting that person's
values back into it gives that rendering byte for byte, whatever the template did. A person whose rendering
does not factor like the others' (a Jinja branch on an attribute, a filter that changes a value, a short name
that also occurs in the template's text) simply gets a shape of their own and goes out alone, as before. The
only thing a provider must add is keys that cannot be confused with content (:func:`free_of`), since the API
replaces every occurrence of a key.

Measured cost, on bench/send_http.py's newsletter (20 KB of HTML, 13 personal values; load 6 on two shared
cores): cutting a message takes ≈ 175 µs of CPU, checking it against a known shape (:class:`Factorer`) ≈ 23 µs;
a request of its own costs the worker ≈ 3 ms (see BENCHMARKS.md, "Batched personalised sends").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from emailkit.domain.ports.provider import PERSONAL_HTML

#: Alternating literal text and value names: ``(literal, name, literal, ..., literal)``; odd indexes are names.
Shape = tuple[str, ...]


#: Values shorter than this are not looked for. One or two characters ("7", "de") occur all over an HTML part
#: (CSS sizes, words), so cutting at them would give that person a shape of their own and send them alone;
#: left in the literal text, they only do so when the template shows them.
MIN_VALUE = 3


def factor(text: str, values: Mapping[str, str]) -> Shape:
    """``text`` cut at every non-overlapping occurrence of one of ``values`` (longer values first, so a name
    inside a URL does not split the URL; equal lengths by name, so every message is cut the same way)."""
    spans: list[tuple[int, int, str]] = []
    for name, value in sorted(values.items(), key=lambda item: (-len(item[1]), item[0])):
        if len(value) < MIN_VALUE:
            continue
        start = text.find(value)
        while start != -1:
            end = start + len(value)
            if all(end <= s or start >= e for s, e, _ in spans):
                spans.append((start, end, name))
                start = text.find(value, end)
            else:
                start = text.find(value, start + 1)
    if not spans:
        return (text,)
    spans.sort()
    parts: list[str] = []
    position = 0
    for start, end, name in spans:
        parts.append(text[position:start])
        parts.append(name)
        position = end
    parts.append(text[position:])
    return tuple(parts)


def names_of(shape: Shape) -> Iterable[str]:
    return shape[1::2]


def fill(shape: Shape, key: Mapping[str, str]) -> str:
    """The shape with each name replaced by ``key[name]`` (a provider's placeholder, or a person's value)."""
    if len(shape) == 1:
        return shape[0]
    parts = list(shape)
    for i in range(1, len(parts), 2):
        parts[i] = key[parts[i]]
    return "".join(parts)


def free_of(marker: str, texts: Iterable[str | None]) -> bool:
    """No text holds ``marker`` (the part every key of a provider starts with), so the API's replacement of
    keys can only ever touch the keys we put in."""
    return not any(text and marker in text for text in texts)


@dataclass(frozen=True, slots=True)
class Factored:
    """One message's text and HTML parts as shapes, and the values their slots take. Slot names say which
    part they are in (``text:name``, ``html:name``): the HTML part shows a value escaped where the text part
    shows it as it is, and a person whose name needs escaping must still share the others' shapes."""

    shapes: tuple[Shape | None, Shape | None]
    values: Mapping[str, str]


def _views(personal: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The person's values as the text part shows them, and as the HTML part does."""
    plain = {name: value for name, value in personal.items() if not name.endswith(PERSONAL_HTML)}
    shown = {name: personal.get(name + PERSONAL_HTML, value) for name, value in plain.items()}
    return plain, shown


def factor_parts(text: str | None, html: str | None, personal: Mapping[str, str]) -> Factored:
    """The text and HTML parts (``None`` stays ``None``) factored by the person's values."""
    plain, shown = _views(personal)
    values: dict[str, str] = {}
    shapes: list[Shape | None] = []
    for part, prefix, by in ((text, "text:", plain), (html, "html:", shown)):
        if part is None:
            shapes.append(None)
            continue
        shape = list(factor(part, by))
        for i in range(1, len(shape), 2):
            values[prefix + shape[i]] = by[shape[i]]
            shape[i] = prefix + shape[i]
        shapes.append(tuple(shape))
    return Factored((shapes[0], shapes[1]), values)


class Factorer:
    """Factors the messages of one hand-over, trying the shapes it has already found before cutting anew.

    A person whose parts equal a known shape filled with their own values can share it: that is all a batch
    needs, and checking it costs a join and a compare, where cutting costs a search of the whole text per
    value (measured on bench/send_http.py's newsletter: ≈ 23 µs against ≈ 175 µs per message).
    """

    def __init__(self, keep: int = 8) -> None:
        self._keep = keep
        self._known: list[tuple[Shape | None, Shape | None]] = []

    def parts(self, text: str | None, html: str | None, personal: Mapping[str, str]) -> Factored:
        plain, shown = _views(personal)
        for position, shapes in enumerate(self._known):
            values = _fitting(shapes, (text, html), (plain, shown))
            if values is not None:
                if position:
                    self._known.insert(0, self._known.pop(position))
                return Factored(shapes, values)
        factored = factor_parts(text, html, personal)
        self._known.insert(0, factored.shapes)
        del self._known[self._keep :]
        return factored


def _fitting(
    shapes: tuple[Shape | None, Shape | None],
    parts: tuple[str | None, str | None],
    views: tuple[Mapping[str, str], Mapping[str, str]],
) -> dict[str, str] | None:
    """The values that fill ``shapes`` into exactly ``parts``, or None when they do not."""
    values: dict[str, str] = {}
    for shape, part, by, prefix in zip(shapes, parts, views, ("text:", "html:"), strict=True):
        if shape is None or part is None:
            if (shape is None) != (part is None):
                return None
            continue
        for slot in names_of(shape):
            value = by.get(slot[len(prefix) :])
            if value is None:
                return None
            values[slot] = value
        if fill(shape, values) != part:
            return None
    return values


def keys_for(shapes: Iterable[Shape | None], key: str) -> dict[str, str]:
    """A placeholder per value name used in the shapes, in order of first use: ``key.format(n)``."""
    keys: dict[str, str] = {}
    for shape in shapes:
        if shape is None:
            continue
        for name in names_of(shape):
            if name not in keys:
                keys[name] = key.format(len(keys))
    return keys
