"""Content rendering: compiling (MJML once, placeholders kept) and rendering subject, HTML and text,
`html_to_text`, `extract_links` and the sample context."""

from __future__ import annotations

from typing import Any

import pytest

from emailkit.domain.content.rendering import (
    CompiledContent,
    RenderError,
    compile_content,
    extract_links,
    html_to_text,
    sample_context,
    template_context,
)
from emailkit.domain.errors import DomainError
from tests.support.rendering import HTML, MJML, NEWSLETTER, mjml

# --- compile and render --------------------------------------------------------------------------------


def test_mjml_is_compiled_once_with_placeholders_kept() -> None:
    compiled = compile_content(NEWSLETTER, MJML, subject="{{ campaign.subject }}")
    assert "<mjml>" not in compiled.html_source
    assert "{{ subscriber.name }}" in compiled.html_source
    assert "{% if subscriber.attributes.plan == 'pro' %}" in compiled.html_source
    # Identical content shares one compilation (every batch of a campaign in one process).
    assert compile_content(NEWSLETTER, MJML, subject="{{ campaign.subject }}") is compiled


def _context(name: str = "Ada", **attributes: Any) -> dict[str, Any]:
    return template_context(
        subscriber={"id": 7, "email": "ada@example.com", "name": name, "attributes": attributes},
        campaign={"name": "June", "subject": "June news"},
        unsubscribe_url="https://mail.example.com/u/abc?x=1&y=2",
        items=["apples", "pears"],
    )


def test_render_personalises_subject_html_and_text() -> None:
    compiled = compile_content(NEWSLETTER, MJML, subject="{{ campaign.subject }} for {{ subscriber.name }}")
    out = compiled.render(_context(city="Paris", plan="pro"))
    assert out.subject == "June news for Ada"
    assert "Hello Ada" in out.html and "News for Paris &amp; friends." in out.html
    assert "Thanks for being pro!" in out.html
    assert 'href="https://mail.example.com/u/abc?x=1&amp;y=2"' in out.html
    assert out.text.startswith(
        "Logo (https://example.com/)\n\n# Hello Ada\n\nNews for Paris & friends.\n\nThanks for being pro!\n"
    )
    assert "Shop now (https://example.com/shop?u=7&src=mail)" in out.text
    assert "- apples\n- pears" in out.text
    assert (
        "Write to us (mailto:help@example.com) or unsubscribe (https://mail.example.com/u/abc?x=1&y=2)"
        in out.text
    )
    assert "Hidden preheader" not in out.text

    other = compiled.render(_context(name="Bob"))
    assert "Hello Bob" in other.html and "pro" not in other.text and "News for you" in other.text


def test_text_alternative_is_derived_once_and_matches_converting_the_html() -> None:
    compiled = compile_content(NEWSLETTER, MJML, subject="s")
    assert compiled.text_strategy == "derived_template"
    for context in (_context(), _context(name="Zoë", city="Kraków", plan="pro"), sample_context()):
        out = compiled.render(context)
        assert out.text == html_to_text(out.html)


def test_derived_text_keeps_loops_and_conditions_tidy() -> None:
    body = (
        "<h2>Orders</h2>{% for o in orders %}<div>#{{ o.id }}: {{ o.item }}</div>{% endfor %}"
        "<p>{% if vip %}VIP {% endif %}thanks,<br>{{- ' the team' }}</p>{%- if ps %}<p>PS: {{ ps }}</p>{% endif %}"
    )
    compiled = compile_content(body, HTML, subject="s")
    assert compiled.text_strategy == "derived_template"
    context = {"orders": [{"id": 1, "item": "tea"}, {"id": 2, "item": "cups"}], "vip": True, "ps": ""}
    out = compiled.render(context)
    assert out.text == html_to_text(out.html) == "## Orders\n\n#1: tea\n#2: cups\n\nVIP thanks,\nthe team"


def test_markup_marked_safe_makes_the_text_follow_the_rendered_html() -> None:
    compiled = compile_content("<p>{{ snippet | safe }}</p>", HTML, subject="s")
    assert compiled.text_strategy == "per_render"
    assert compiled.render({"snippet": "<b>bold</b> <a href='https://x.example'>x</a>"}).text == (
        "bold x (https://x.example)"
    )


def test_html_is_autoescaped_but_subject_and_text_are_not() -> None:
    compiled = compile_content(
        "<p>{{ subscriber.name }}</p>",
        HTML,
        subject="For {{ subscriber.name }}",
        plain_text="Hi {{ subscriber.name }}",
    )
    out = compiled.render(_context(name="<Tom & Jerry>"))
    assert out.html == "<p>&lt;Tom &amp; Jerry&gt;</p>"
    assert out.subject == "For <Tom & Jerry>"
    assert out.text == "Hi <Tom & Jerry>"
    assert compiled.text_strategy == "plain_text"


def test_given_plain_text_keeps_its_lines() -> None:
    compiled = compile_content(
        "<p>x</p>", HTML, subject="s", plain_text="Hi {{ subscriber.name }},\n\n  indented\nbye   "
    )
    assert compiled.render(_context()).text == "Hi Ada,\n\n  indented\nbye"


def test_missing_values_render_empty() -> None:
    compiled = compile_content(
        "<p>[{{ nothing }}][{{ subscriber.attributes.a.b.c }}][{{ subscriber.attributes.none }}]</p>",
        HTML,
        subject="[{{ campaign.missing }}]",
    )
    out = compiled.render(_context(none=None))
    assert out.html == "<p>[][][]</p>"
    assert out.subject == "[]"


def test_dict_keys_win_over_dict_methods() -> None:
    compiled = compile_content(
        "{{ subscriber.attributes.items }}|{{ subscriber.attributes.keys }}", HTML, subject="s"
    )
    assert compiled.render(_context(items=3, keys="k")).html == "3|k"


def test_subject_stays_on_one_line() -> None:
    compiled = compile_content("<p>x</p>", HTML, subject="Hi {{ subscriber.name }}!")
    assert (
        compiled.render(_context(name="Eve\r\nBcc: all@example.com")).subject
        == "Hi Eve Bcc: all@example.com!"
    )


def test_render_failure_is_a_render_error_with_the_source_line() -> None:
    compiled = compile_content(
        NEWSLETTER.replace("{{ subscriber.id }}", "{{ subscriber.id + 1 }}"), MJML, subject="s"
    )
    with pytest.raises(RenderError) as caught:
        compiled.render(_context() | {"subscriber": {"name": "x", "attributes": {}}})
    [error] = caught.value.errors
    assert (error.field, error.code.value) == ("body", "TEMPLATE_RENDER")
    # Line 14 of the MJML source, not a line of the compiled HTML.
    assert error.message.startswith("Line 14: ")

    subject = compile_content("<p>x</p>", HTML, subject="{{ subscriber.name.upper() }}")
    with pytest.raises(RenderError) as caught:
        subject.render({"subscriber": {"name": 5}})
    assert caught.value.errors[0].field == "subject"


def test_sandbox_holds_at_render_time() -> None:
    compiled = compile_content("<p>{{ obj[name] }}</p>", HTML, subject="s")
    with pytest.raises(RenderError) as caught:
        compiled.render({"obj": "", "name": "__class__"})
    assert caught.value.errors[0].code.value == "TEMPLATE_SECURITY"


def test_compile_rejects_what_validate_rejects() -> None:
    with pytest.raises(DomainError) as caught:
        compile_content(
            mjml("<mj-text>{% if a < 1 %}x{% endif %}</mj-text>"), MJML, subject="{{ x", plain_text="{% if %}"
        )
    assert {(e.field, e.code.value) for e in caught.value.errors} == {
        ("subject", "TEMPLATE_SYNTAX"),
        ("plainText", "TEMPLATE_SYNTAX"),
        ("body", "MJML_INVALID"),
    }


def test_compiled_content_is_reusable_across_renders() -> None:
    compiled: CompiledContent = compile_content("<p>{{ n }}</p>", HTML, subject="#{{ n }}")
    assert [compiled.render({"n": i}).subject for i in range(3)] == ["#0", "#1", "#2"]


# --- html_to_text and extract_links --------------------------------------------------------------------


PAGE = """<!doctype html><html><head><title>Title</title><style>p { color: red }</style></head><body>
<div style="display:none; max-height:0">preheader</div>
<script>alert("x")</script>
<h1>Big   news</h1>
<p>Hello <b>World</b>,
   this is&nbsp;a test &amp; more.</p>
<ul><li>One</li><li>Two <a href="https://example.com/two">details</a></li>
  <li>Nested<ol><li>first</li><li>second</li></ol></li></ul>
<p><a href="https://example.com/">https://example.com/</a> <a href="#top">top</a> <a href="tel:+331">call</a></p>
<p>line<br>break<br><br>after a blank</p>
<hr>
<pre>  kept
    as is</pre>
<a href="https://example.com/logo"><img src="logo.png" alt="Logo"></a>
</body></html>"""


def test_html_to_text() -> None:
    assert html_to_text(PAGE) == (
        "# Big news\n\n"
        "Hello World, this is a test & more.\n\n"
        "- One\n"
        "- Two details (https://example.com/two)\n"
        "- Nested\n"
        "  1. first\n"
        "  2. second\n\n"
        "https://example.com/ top call (tel:+331)\n\n"
        "line\nbreak\n\nafter a blank\n\n"
        "--------------------\n\n"
        "  kept\n    as is\n\n"
        "Logo (https://example.com/logo)"
    )


def test_html_to_text_of_plain_fragments() -> None:
    assert html_to_text("") == ""
    assert html_to_text("just   text\n here") == "just text here"
    assert html_to_text("<h3>A</h3><h3>B</h3>") == "### A\n\n### B"
    assert html_to_text('<a href="https://x.example">  </a>') == "https://x.example"
    # Social icons: an image link without alt text is decoration next to the labelled link.
    assert (
        html_to_text(
            '<a href="https://fb.example"><img src="fb.png"></a><a href="https://fb.example">Facebook</a>'
            '<a href="https://tw.example">Twitter</a>'
        )
        == "Facebook (https://fb.example) Twitter (https://tw.example)"
    )


def test_extract_links() -> None:
    html = (
        '<a href="https://a.example/1">1</a><a href="mailto:x@example.com">m</a><a href="tel:123">t</a>'
        '<a href="#top">t</a><a href="javascript:void(0)">j</a><a href="https://a.example/1">again</a>'
        '<a href="http://b.example/?a=1&amp;b=2">b</a><area href="https://c.example/map"><a>no href</a>'
    )
    assert extract_links(html) == [
        "https://a.example/1",
        "http://b.example/?a=1&b=2",
        "https://c.example/map",
    ]


def test_sample_context_is_fresh_and_complete() -> None:
    first = sample_context()
    first["subscriber"]["name"] = "changed"
    second = sample_context()
    assert second["subscriber"]["name"] != "changed"
    assert {"subscriber", "campaign", "unsubscribe_url"} <= second.keys()
    assert {"email", "name", "attributes"} <= second["subscriber"].keys()
    assert sample_context(extra=1)["extra"] == 1
