"""Tracking compiled into the template renders exactly what the per-message rewrite produces."""

from __future__ import annotations

from typing import Any

import pytest

from emailkit.db.tables.content import ContentFormat
from emailkit.domain.content.rendering import CLICK_CALL, PIXEL_CALL, compile_content, template_context
from emailkit.domain.content.tracked_urls import TrackingUrls, add_open_pixel, rewrite_links
from emailkit.domain.tokens import TokenSigner

URLS = TrackingUrls("https://mail.example.org", TokenSigner("k" * 32))
DID = 4242
UNSUB = URLS.unsubscribe(DID)


def _context(content: Any, clicks: bool, opens: bool, **attributes: Any) -> tuple[Any, dict[str, Any]]:
    tracked = content.tracked(clicks=clicks, opens=opens)
    calls: dict[str, Any] = {}
    if tracked.render is not None:
        calls[CLICK_CALL] = lambda i: URLS.click(DID, tracked.links[i])
        calls[PIXEL_CALL] = lambda: URLS.open_pixel(DID)
    ctx = template_context(
        subscriber={"id": 1, "email": "ada@example.com", "name": "Ada", "attributes": attributes},
        campaign={"id": 7, "name": "News"},
        unsubscribe_url=UNSUB,
        **calls,
    )
    return tracked, ctx


def tracked_html(
    body: str, *, clicks: bool = True, opens: bool = True, fmt: str = "HTML", **attrs: Any
) -> str:
    content = compile_content(body, ContentFormat(fmt), subject="Hi")
    tracked, ctx = _context(content, clicks, opens, **attrs)
    html = content.render(ctx, tracked=tracked).html
    if clicks and not tracked.clicks:
        html = rewrite_links(html, lambda url: URLS.click(DID, url), skip=frozenset({UNSUB}))
    if opens and not tracked.pixel:
        html = add_open_pixel(html, URLS.open_pixel(DID))
    return html


def rewritten_html(
    body: str, *, clicks: bool = True, opens: bool = True, fmt: str = "HTML", **attrs: Any
) -> str:
    content = compile_content(body, ContentFormat(fmt), subject="Hi")
    _, ctx = _context(content, False, False, **attrs)
    html = content.render(ctx).html
    if clicks:
        html = rewrite_links(html, lambda url: URLS.click(DID, url), skip=frozenset({UNSUB}))
    if opens:
        html = add_open_pixel(html, URLS.open_pixel(DID))
    return html


STATIC = """<html><body>
<p>Hello {{ subscriber.name }}</p>
<a href="https://example.com/a?x=1&amp;y=2">A</a>
<A class="b" HREF='https://example.com/b'>B</A>
<a href="https://example.com/a?x=1&amp;y=2">A again</a>
<a href="mailto:someone@example.com">mail</a>
<a href="#top">top</a>
<img src="https://cdn.example.com/logo.png">
{% for i in range(2) %}<a href="https://example.com/loop">loop {{ i }}</a>{% endfor %}
{% if subscriber.attributes.plan == 'pro' %}<a href="https://example.com/pro">pro</a>{% endif %}
<a href="{{ unsubscribe_url }}">Unsubscribe</a>
</body></html>"""


@pytest.mark.parametrize("plan", ["pro", "free"])
@pytest.mark.parametrize(("clicks", "opens"), [(True, True), (True, False), (False, True)])
def test_static_links_and_pixel_are_compiled_in(plan: str, clicks: bool, opens: bool) -> None:
    content = compile_content(STATIC, ContentFormat.HTML, subject="Hi")
    tracked = content.tracked(clicks=clicks, opens=opens)
    assert tracked.clicks is clicks
    assert tracked.pixel is opens
    if clicks:
        # Each distinct trackable target once, in document order; mailto, anchors and images are left alone.
        assert tracked.links == (
            "https://example.com/a?x=1&y=2",
            "https://example.com/b",
            "https://example.com/loop",
            "https://example.com/pro",
        )
    html = tracked_html(STATIC, clicks=clicks, opens=opens, plan=plan)
    assert html == rewritten_html(STATIC, clicks=clicks, opens=opens, plan=plan)
    assert ("/t/c/" in html) is clicks
    assert ("/t/o/" in html) is opens
    assert UNSUB in html


def test_the_compiled_template_is_reused() -> None:
    content = compile_content(STATIC, ContentFormat.HTML, subject="Hi")
    assert content.tracked(clicks=True, opens=True) is content.tracked(clicks=True, opens=True)


def test_mjml_newsletter_renders_the_same_both_ways() -> None:
    body = """<mjml><mj-body><mj-section><mj-column>
      <mj-text>Hi {{ subscriber.name }}, read <a href="https://example.com/story">the story</a>.</mj-text>
      <mj-button href="https://example.com/buy">Buy</mj-button>
      <mj-text><a href="{{ unsubscribe_url }}">Unsubscribe</a></mj-text>
    </mj-column></mj-section></mj-body></mjml>"""
    content = compile_content(body, ContentFormat.MJML, subject="Hi")
    tracked = content.tracked(clicks=True, opens=True)
    assert tracked.clicks and tracked.pixel
    assert set(tracked.links) == {"https://example.com/story", "https://example.com/buy"}
    assert tracked_html(body, fmt="MJML") == rewritten_html(body, fmt="MJML")


@pytest.mark.parametrize(
    "body",
    [
        # A link built from data can only be found once rendered.
        '<body><a href="{{ subscriber.attributes.page }}">page</a></body>',
        '<body><a href="https://example.com/{{ subscriber.id }}">mine</a></body>',
        '<body><a {% if subscriber.attributes.plan %}class="x"{% endif %} href="https://example.com/c">c</a></body>',
    ],
)
def test_links_built_from_data_fall_back_to_the_rewrite(body: str) -> None:
    content = compile_content(body, ContentFormat.HTML, subject="Hi")
    tracked = content.tracked(clicks=True, opens=True)
    assert not tracked.clicks
    assert tracked.pixel
    html = tracked_html(body, page="https://example.com/p", plan="pro")
    assert html == rewritten_html(body, page="https://example.com/p", plan="pro")
    assert "/t/c/" in html


def test_markup_emitted_unescaped_is_never_compiled_in() -> None:
    body = "<body>{{ subscriber.attributes.snippet | safe }}</body>"
    content = compile_content(body, ContentFormat.HTML, subject="Hi")
    assert content.tracked(clicks=True, opens=True).render is None
    snippet = '<a href="https://example.com/s">s</a></body>'
    assert tracked_html(body, snippet=snippet) == rewritten_html(body, snippet=snippet)


@pytest.mark.parametrize(
    "body",
    [
        "<p>No body element at all</p>",
        "<html><body><p>x</p></body>\n<!-- </body> in a comment --></html>",
        "<html><body>{% if subscriber.attributes.plan %}<p>pro</p></body>{% else %}<p>free</p></body>{% endif %}</html>",
        "<html><BODY><p>x</p></BODY ></html>",
        # The same text twice in one output: the pixel goes before the last one.
        "<html><body>{{ subscriber.name }}</body>{{ subscriber.name }}</body>",
    ],
)
@pytest.mark.parametrize("plan", ["pro", ""])
def test_the_pixel_goes_where_the_rewrite_would_put_it(body: str, plan: str) -> None:
    assert tracked_html(body, clicks=False, plan=plan) == rewritten_html(body, clicks=False, plan=plan)


def test_pixel_inside_a_branch_is_placed_per_message() -> None:
    body = "<html><body>{% if subscriber.attributes.plan %}<p>pro</p></body>{% endif %}</html>"
    content = compile_content(body, ContentFormat.HTML, subject="Hi")
    assert not content.tracked(clicks=False, opens=True).pixel


def test_tracking_calls_do_not_leak_into_untracked_renders() -> None:
    content = compile_content(STATIC, ContentFormat.HTML, subject="Hi")
    _, ctx = _context(content, False, False)
    html = content.render(ctx).html
    assert "/t/c/" not in html and "/t/o/" not in html
