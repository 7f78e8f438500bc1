"""Tracked URLs and the per-recipient HTML rewrite (click links and the open pixel)."""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import Callable
from functools import lru_cache

from emailkit.domain.tokens import TokenSigner

PURPOSE_OPEN = "o"
PURPOSE_CLICK = "c"
PURPOSE_UNSUBSCRIBE = "u"
PURPOSE_WEBVIEW = "v"

# href of <a> tags only: images, stylesheets and <base> must not be rewritten.
A_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_BODY_CLOSE = re.compile(r"</body", re.IGNORECASE)
_BODY_SEARCH_TAIL = 4096


class TrackingUrls:
    def __init__(self, public_url: str, signer: TokenSigner) -> None:
        self.base = public_url.rstrip("/")
        self.signer = signer

    def open_pixel(self, delivery_id: int) -> str:
        return f"{self.base}/t/o/{self.signer.sign(PURPOSE_OPEN, delivery_id)}.gif"

    def click(self, delivery_id: int, url: str) -> str:
        return f"{self.base}/t/c/{self.signer.sign(PURPOSE_CLICK, delivery_id, url)}"

    def unsubscribe(self, delivery_id: int) -> str:
        return f"{self.base}/u/{self.signer.sign(PURPOSE_UNSUBSCRIBE, delivery_id)}"

    def web_view(self, delivery_id: int) -> str:
        """The page showing this delivery's message as its recipient received it (``webview_url``)."""
        return f"{self.base}/v/{self.signer.sign(PURPOSE_WEBVIEW, delivery_id)}"


def trackable(url: str) -> bool:
    lowered = url.strip().lower()
    return lowered.startswith(("http://", "https://"))


def rewrite_links(html: str, make_url: Callable[[str], str], *, skip: frozenset[str] = frozenset()) -> str:
    """Replace every trackable <a href> with ``make_url(original)``; links in ``skip`` stay as they are."""

    def repl(m: re.Match[str]) -> str:
        original = link_target(m.group(3))
        if original is None or original in skip:
            return m.group(0)
        return f"{m.group(1)}{m.group(2)}{htmllib.escape(make_url(original), quote=True)}{m.group(2)}"

    return A_HREF.sub(repl, html)


@lru_cache(maxsize=4096)
def link_target(href: str) -> str | None:
    """The URL an href attribute's text points to when it is trackable, else None.

    Cached because a campaign's messages repeat the same few hrefs for every recipient.
    """
    original = htmllib.unescape(href).strip()
    return original if trackable(original) else None


def pixel_tag(pixel_url: str) -> str:
    return (
        f'<img src="{htmllib.escape(pixel_url)}" width="1" height="1" alt="" style="display:block;border:0">'
    )


def add_open_pixel(html: str, pixel_url: str) -> str:
    tag = pixel_tag(pixel_url)
    # The last </body>: an earlier one could sit inside a comment or a quoted example.
    at = _last_body_close(html)
    if at < 0 or not _BODY_END.match(html, at):
        return html + tag
    return html[:at] + tag + html[at:]


def _last_body_close(html: str) -> int:
    """Index of the last "</body" in any letter case, or -1.

    Runs per recipient on the whole message, so the end of the document is searched first and lower-cased
    with str methods (a case-insensitive regex scan costs several times more).
    """
    start = max(0, len(html) - _BODY_SEARCH_TAIL)
    if start:
        at = _rfind_body(html[start:])
        if at >= 0:
            return start + at
    return _rfind_body(html)


def _rfind_body(html: str) -> int:
    lowered = html.lower()
    if len(lowered) == len(html):
        # lower() never shortens a character, so equal lengths mean equal offsets.
        return lowered.rfind("</body")
    found = -1
    for m in _BODY_CLOSE.finditer(html):
        found = m.start()
    return found
