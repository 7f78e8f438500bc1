"""The "View in browser" line a campaign can put at the top of its messages (``webViewLink``).

It is added to the compiled HTML template once, as Jinja source (``{{ webview_url }}``), before the template is
compiled: every message then renders it like any other placeholder, and the text alternative derived from the
HTML carries it too. A hand-written text alternative gets a first line of its own.
"""

from __future__ import annotations

import re

WEBVIEW_VAR = "webview_url"
VIEW_LINK_TEXT = "View in browser"

# Small and grey, like a preheader: the message's own content stays what the reader sees first. No line break in
# it, so the lines of the author's source (and of any error about them) stay where they were.
VIEW_LINK_HTML = (
    '<div style="margin:0;padding:8px 12px;text-align:center;font:12px/1.4 Arial,Helvetica,sans-serif;'
    f'color:#6a737d"><a href="{{{{ {WEBVIEW_VAR} }}}}" style="color:#6a737d;text-decoration:underline">'
    f"{VIEW_LINK_TEXT}</a></div>"
)
VIEW_LINK_TEXT_LINE = f"{VIEW_LINK_TEXT}: {{{{ {WEBVIEW_VAR} }}}}\n\n"

_BODY_OPEN = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
_HEAD_CLOSE = re.compile(r"</head\s*>", re.IGNORECASE)
# A hidden preheader right after <body> (MJML's <mj-preview> writes one): mailbox providers show the first text
# of a message as its preview, so the line goes after it, never before.
_PREHEADER = re.compile(
    r"\s*<div\b[^>]*display\s*:\s*none[^>]*>[^<]*</div>",
    re.IGNORECASE,
)


def with_view_link(html: str) -> str:
    """``html`` (a template's HTML source) with the line right after ``<body>`` and its hidden preheader;
    without a body, after ``</head>`` or at the very start."""
    body = _BODY_OPEN.search(html)
    if body is not None:
        at = body.end()
        preheader = _PREHEADER.match(html, at)
        if preheader is not None:
            at = preheader.end()
    else:
        head = _HEAD_CLOSE.search(html)
        at = 0 if head is None else head.end()
    return html[:at] + VIEW_LINK_HTML + html[at:]


def with_view_line(plain_text: str) -> str:
    """A hand-written text alternative with the link as its first line."""
    return VIEW_LINK_TEXT_LINE + plain_text


def mentions_web_view(*sources: str | None) -> bool:
    """Whether any of the sources may use ``webview_url``: only then is the link signed for each message."""
    return any(source is not None and WEBVIEW_VAR in source for source in sources)
