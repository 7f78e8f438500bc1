"""An Atom 1.0 feed document (RFC 4287), written with ElementTree so every text and attribute is escaped."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

ATOM_NS = "http://www.w3.org/2005/Atom"
MEDIA_TYPE = "application/atom+xml; charset=utf-8"
# Characters XML 1.0 cannot hold at all, escaped or not: they would make the whole feed unreadable.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True)
class Entry:
    id: str
    title: str
    link: str
    updated: datetime
    published: datetime | None
    # The entry's HTML, sent as escaped text (type="html"); None: only a summary.
    html: str | None
    summary: str | None = None


@dataclass(frozen=True)
class Feed:
    id: str
    title: str
    updated: datetime
    self_url: str
    alternate_url: str
    author: str
    icon: str | None
    entries: Sequence[Entry]


def _date(value: datetime) -> str:
    """RFC 3339 in UTC, to the second."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: str) -> str:
    return _NOT_XML.sub("", value)


def _child(parent: ET.Element, tag: str, text: str | None = None, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, tag, {k: _text(v) for k, v in attributes.items()})
    if text is not None:
        element.text = _text(text)
    return element


def _link(parent: ET.Element, rel: str, href: str, media_type: str) -> None:
    _child(parent, "link", rel=rel, type=media_type, href=href)


def _entry(feed: ET.Element, entry: Entry) -> None:
    element = _child(feed, "entry")
    _child(element, "id", entry.id)
    _child(element, "title", entry.title, type="text")
    _child(element, "updated", _date(entry.updated))
    if entry.published is not None:
        _child(element, "published", _date(entry.published))
    _link(element, "alternate", entry.link, "text/html")
    if entry.summary is not None:
        _child(element, "summary", entry.summary, type="text")
    if entry.html is not None:
        _child(element, "content", entry.html, type="html")


def feed_document(feed: Feed) -> bytes:
    # The namespace as a plain attribute of the root: every element is then in it, unprefixed.
    root = ET.Element("feed", {"xmlns": ATOM_NS})
    _child(root, "id", feed.id)
    _child(root, "title", feed.title, type="text")
    _child(root, "updated", _date(feed.updated))
    _link(root, "self", feed.self_url, "application/atom+xml")
    _link(root, "alternate", feed.alternate_url, "text/html")
    author = _child(root, "author")
    _child(author, "name", feed.author)
    if feed.icon is not None:
        _child(root, "icon", feed.icon)
    _child(root, "generator", "emailkit")
    for entry in feed.entries:
        _entry(root, entry)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))
