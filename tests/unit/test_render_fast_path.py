"""The per-recipient fast paths give exactly what the straightforward code gives."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import pytest
from jinja2 import Template

from emailkit.domain.content.rendering import sample_context
from emailkit.domain.content.rendering.content import fast_render
from emailkit.domain.content.rendering.jinja import HTML_ENV, TEXT_ENV, render_failure
from emailkit.domain.content.tracked_urls import add_open_pixel, rewrite_links
from emailkit.domain.tokens import TokenSigner

TEMPLATES = [
    "Hello {{ subscriber.name }} from {{ subscriber.attributes.city | default('nowhere') }}",
    "{% for i in range(3) %}<li>{{ i }} {{ subscriber.email }}</li>{% endfor %}",
    "{% set ns = namespace(n=0) %}{% for k, v in subscriber.attributes | dictsort %}"
    "{% set ns.n = ns.n + 1 %}{{ k }}={{ v }};{% endfor %}{{ ns.n }}",
    "{% macro b(t) %}<b>{{ t }}</b>{% endmacro %}{{ b(subscriber.name) }} {{ dict(a=1).a }}",
    "{% set c = cycler('odd', 'even') %}{% for x in [1, 2, 3] %}{{ c.next() }}{% endfor %}",
    "<a href=\"{{ unsubscribe_url }}\">{{ '<script>' }}</a>{{ missing.deep.value }}|{{ none_value }}",
]


@pytest.mark.parametrize("source", TEMPLATES)
@pytest.mark.parametrize("env", [HTML_ENV, TEXT_ENV], ids=["html", "text"])
def test_fast_render_output_equals_template_render(source: str, env: Any) -> None:
    template = env.from_string(source)
    context = sample_context(none_value=None)
    assert fast_render(template)(context) == template.render(context)
    # The caller's mapping is not written to, whatever the template sets.
    assert "ns" not in context and "c" not in context


def _failure(render: Callable[[], str]) -> str:
    with pytest.raises(Exception) as caught:
        render()
    assert isinstance(caught.value, Exception)
    return render_failure(caught.value, "body").errors[0].message


@pytest.mark.parametrize(
    "source",
    [
        "line one\nline two {{ subscriber.name + 1 }}",
        "a\nb\nc {{ ''.__class__ }}",
        "{% for x in range(20000) %}{% endfor %}",
        "\n\n{{ missing.value + 3 }}",
    ],
)
def test_fast_render_fails_as_render_does_with_the_same_line(source: str) -> None:
    template: Template = HTML_ENV.from_string(source)
    context = sample_context()
    assert _failure(lambda: fast_render(template)(context)) == _failure(lambda: template.render(context))


def test_token_mac_is_still_hmac_sha256_of_the_derived_key() -> None:
    secret = "a-secret-of-some-length-0123456789"
    signer = TokenSigner(secret)
    token = signer.sign("c", 1234, "https://example.com/a?b=c&d=é")
    body, mac = token.split(".")
    payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    key = hmac.new(secret.encode(), b"emailkit-tokens-v1", hashlib.sha256).digest()
    expected = hmac.new(key, b"c\0" + payload, hashlib.sha256).digest()[:12]
    assert base64.urlsafe_b64encode(expected).decode().rstrip("=") == mac
    assert body == base64.urlsafe_b64encode(payload).decode().rstrip("=")
    assert signer.verify("c", token) == ["1234", "https://example.com/a?b=c&d=é"]
    assert signer.verify("o", token) is None


def test_rewrite_links_resolves_each_href_the_same_way_every_time() -> None:
    html = (
        '<a href=" https://example.com/a?x=1&amp;y=2 ">A</a>'
        "<A HREF='http://example.com/b'>B</A>"
        '<a href="mailto:x@example.com">M</a>'
        '<a href="https://example.com/skip">S</a>'
        '<a class="c" data-href="https://example.com/data" href="https://example.com/c">C</a>'
        '<img src="https://example.com/i.png">'
    )
    seen: list[str] = []

    def track(url: str) -> str:
        seen.append(url)
        return f"https://t.example/{len(seen)}?u={url}"

    for _ in range(2):
        seen.clear()
        out = rewrite_links(html, track, skip=frozenset({"https://example.com/skip"}))
        assert seen == [
            "https://example.com/a?x=1&y=2",
            "http://example.com/b",
            "https://example.com/data",
        ]
    assert 'href="https://t.example/1?u=https://example.com/a?x=1&amp;y=2"' in out
    assert (
        "HREF='http://t.example/2" not in out and "HREF='https://t.example/2?u=http://example.com/b'" in out
    )
    assert '<a href="mailto:x@example.com">' in out and '<a href="https://example.com/skip">' in out
    assert '<img src="https://example.com/i.png">' in out


PIXEL = "https://t.example/o.gif"
TAG = f'<img src="{PIXEL}" width="1" height="1" alt="" style="display:block;border:0">'


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<html><body>x</body></html>", f"<html><body>x{TAG}</body></html>"),
        ("<BODY>x</Body >", f"<BODY>x{TAG}</Body >"),
        ("<p>no body</p>", f"<p>no body</p>{TAG}"),
        # The last </body> counts, also when it lies far from the end.
        ("<body><!-- </body> -->x</body>" + "<p>tail</p>" * 1000, None),
        # An earlier "</body" that is not a closing tag is not taken either.
        ("x</bodyguard>", f"x</bodyguard>{TAG}"),
        # Characters that lower-case into two do not shift the insertion point.
        ("İ" * 5000 + "<body>x</body>", "İ" * 5000 + f"<body>x{TAG}</body>"),
        (
            "<body>" + "İ" * 5000 + "</body>" + "z" * 5000,
            "<body>" + "İ" * 5000 + f"{TAG}</body>" + "z" * 5000,
        ),
    ],
)
def test_open_pixel_goes_before_the_last_closing_body_tag(html: str, expected: str | None) -> None:
    out = add_open_pixel(html, PIXEL)
    if expected is None:
        at = html.rfind("</body>")
        expected = html[:at] + TAG + html[at:]
    assert out == expected
