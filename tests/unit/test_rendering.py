from __future__ import annotations

from typing import Any

import pytest

from emailkit.db.tables.content import ContentFormat
from emailkit.domain.content.rendering import (
    CompiledContent,
    RenderError,
    compile_content,
    extract_links,
    html_to_text,
    sample_context,
    template_context,
    validate_content,
    validate_plain_text,
)
from emailkit.domain.errors import DomainError

MJML, HTML = ContentFormat.MJML, ContentFormat.HTML


def mjml(inner: str) -> str:
    """An MJML document whose `inner` starts on line 5."""
    return f"<mjml>\n<mj-body>\n<mj-section>\n<mj-column>\n{inner}\n</mj-column>\n</mj-section>\n</mj-body>\n</mjml>"


NEWSLETTER = """<mjml>
  <mj-head>
    <mj-title>{{ campaign.subject }}</mj-title>
    <mj-preview>Hidden preheader for {{ subscriber.name }}</mj-preview>
  </mj-head>
  <mj-body>
    <mj-section>
      <mj-column>
        <mj-image src="https://cdn.example.com/logo.png" width="120px" alt="Logo" href="https://example.com/" />
        <mj-text><h1>Hello {{ subscriber.name }}</h1><p>News for {{ subscriber.attributes.city | default('you') }} &amp; friends.</p></mj-text>
        {% if subscriber.attributes.plan == 'pro' %}
        <mj-text>Thanks for being pro!</mj-text>
        {% endif %}
        <mj-button href="https://example.com/shop?u={{ subscriber.id }}&amp;src=mail">Shop now</mj-button>
        <mj-text><ul>{% for item in items | default([]) %}<li>{{ item }}</li>{% endfor %}</ul></mj-text>
        <mj-text><a href="mailto:help@example.com">Write to us</a> or <a href="{{ unsubscribe_url }}">unsubscribe</a></mj-text>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>
"""


def errors_of(
    body: str, fmt: ContentFormat = HTML, subject: str | None = None
) -> list[tuple[str | None, str, str]]:
    with pytest.raises(DomainError) as caught:
        validate_content(body, fmt, subject=subject)
    return [(e.field, e.code.value, e.message) for e in caught.value.errors]


def only_error(
    body: str, fmt: ContentFormat = HTML, subject: str | None = None
) -> tuple[str | None, str, str]:
    found = errors_of(body, fmt, subject)
    assert len(found) == 1, found
    return found[0]


# --- validate_content: Jinja ---------------------------------------------------------------------------


def test_valid_content_passes() -> None:
    validate_content(NEWSLETTER, MJML, subject="{{ campaign.name }} for {{ subscriber.name }}")
    validate_content("<p>Hi {{ subscriber.name }}</p>", HTML, subject="Hello")
    # A subject-only check (how campaigns using a template validate their own subject).
    validate_content("", HTML, subject="Hi {{ subscriber.name }}")


def test_jinja_syntax_error_names_the_line() -> None:
    field, code, message = only_error("<p>one</p>\n<p>two</p>\n<p>{{ subscriber.name </p>")
    assert (field, code) == ("body", "TEMPLATE_SYNTAX")
    assert message.startswith("Line 3: ")


def test_unclosed_block_reports_a_syntax_error() -> None:
    field, code, message = only_error("<p>\n{% if subscriber.name %}\nHi\n</p>")
    assert (field, code) == ("body", "TEMPLATE_SYNTAX")
    assert "endif" in message


def test_subject_is_a_template_too_and_both_fields_are_reported() -> None:
    found = errors_of("<p>{% for %}</p>", subject="Hello {{ subscriber.name")
    assert {(f, c) for f, c, _ in found} == {("subject", "TEMPLATE_SYNTAX"), ("body", "TEMPLATE_SYNTAX")}
    assert all(m.startswith("Line 1: ") for _, _, m in found)


def test_unknown_filter_and_include_are_syntax_errors() -> None:
    assert only_error("<p>\n{{ subscriber.name | shout }}</p>")[1:] == (
        "TEMPLATE_SYNTAX",
        "Line 2: No filter named 'shout'.",
    )
    _, code, message = only_error("{% include 'footer.html' %}")
    assert code == "TEMPLATE_SYNTAX" and "not supported" in message


@pytest.mark.parametrize(
    "body",
    [
        "<p>{{ ''.__class__.__mro__ }}</p>",
        "<p>{{ subscriber.__class__ }}</p>",
        "<p>{{ cycler.__init__.__globals__ }}</p>",
        "<p>{{ ''['__class__'] }}</p>",
        # Not executed with the sample data, still refused.
        "<p>{% if false %}{{ ().__class__.__base__.__subclasses__() }}{% endif %}</p>",
    ],
)
def test_sandbox_escapes_found_statically(body: str) -> None:
    field, code, message = only_error("\n" + body)
    assert (field, code) == ("body", "TEMPLATE_SECURITY")
    assert message.startswith("Line 2: access to '__")


def test_one_security_report_per_line_in_written_order() -> None:
    assert only_error("{{ ''.__class__.__mro__ }}")[2] == (
        "Line 1: access to '__class__', '__mro__' is not allowed (the template sandbox blocks names starting with '_')"
    )


@pytest.mark.parametrize(
    "body",
    [
        "<p>{% set k = '__cla' ~ 'ss__' %}{{ ''[k] }}</p>",
        "<p>{{ '' | attr('__cla' ~ 'ss__') }}</p>",
        "<p>{{ '{0.__class__}'.format(1) }}</p>",
        "<p>{{ subscriber.attributes.update({'plan': 'free'}) }}</p>",
    ],
)
def test_sandbox_escapes_found_by_the_sample_render(body: str) -> None:
    field, code, message = only_error("<p>ok</p>\n" + body)
    assert (field, code) == ("body", "TEMPLATE_SECURITY")
    assert message.startswith("Line 2: ")


@pytest.mark.parametrize("body", ["<p>{{ 'x' * 100000000 }}</p>", "<p>{{ 9 ** 99999999 }}</p>"])
def test_resource_abuse_found_by_the_sample_render_is_a_template_limit(body: str) -> None:
    field, code, message = only_error("<p>ok</p>\n" + body)
    assert (field, code) == ("body", "TEMPLATE_LIMIT")
    assert message.startswith("Line 2: over a template limit: ")


def test_render_errors_name_the_line() -> None:
    field, code, message = only_error("<p>a</p>\n<p>b</p>\n<p>{{ 10 / 0 }}</p>")
    assert (field, code, message) == (
        "body",
        "TEMPLATE_RENDER",
        "Line 3: ZeroDivisionError: division by zero",
    )
    assert only_error("{{ subscriber.email + 1 }}")[1] == "TEMPLATE_RENDER"
    assert "range" in only_error("{% for i in range(10000000) %}{% endfor %}")[2]


def test_values_the_sample_lacks_do_not_fail_validation() -> None:
    # Custom attributes and transactional data only exist at send time.
    validate_content(
        "<p>{{ subscriber.attributes.loyalty_points + 10 }} {{ order.total * 2 }} {{ order.lines | length }}"
        "{% for line in order.lines %}{{ line.sku }}{% endfor %}{{ helper() }}</p>"
        "<p>{{ order.total | round(2) }} {{ '%.2f' | format(order.total) }} {{ '%d' | format(order.count) }}"
        " {{ '{:,}'.format(order.count) }} {{ order.total | abs }} {{ order.total | float * 1.2 }}"
        " {{ order.lines | sum(attribute='qty') }} {% if order.count > 3 %}many{% endif %}</p>",
        HTML,
    )
    # The same template at send time, for a recipient whose data lacks the value: that render fails.
    with pytest.raises(RenderError):
        compile_content("<p>{{ subscriber.attributes.loyalty_points + 10 }}</p>", HTML, subject="s").render(
            sample_context()
        )


def test_plain_text_is_checked_without_html_rules() -> None:
    validate_plain_text("Hi {{ subscriber.name }} <not html>")
    with pytest.raises(DomainError) as caught:
        validate_plain_text("Hi\n{{ subscriber.name")
    assert [(e.field, e.code.value) for e in caught.value.errors] == [("plainText", "TEMPLATE_SYNTAX")]


# --- validate_content: MJML ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inner", "line", "fragment"),
    [
        ("<mj-text>hi", 5, "<mj-text> is not closed"),
        ("<mj-text>hi</mj-text>\n</mj-foo>", 6, "</mj-foo> closes nothing"),
        ("<mj-text color=red>hi</mj-text>", 5, "must be in quotes"),
        ("<mj-text>\n5 < 6</mj-text>", 6, "'<' in text must be written as &lt;"),
        ("<mj-text><p>one<p>two</mj-text>", 5, "<p> is not closed"),
        ("<mj-buton>Go</mj-buton>", 5, "<mj-buton> is not an MJML element"),
        ('<mj-include path="header.mjml" />', 5, "mj-include"),
    ],
)
def test_invalid_mjml_names_the_line(inner: str, line: int, fragment: str) -> None:
    field, code, message = only_error(mjml(inner), MJML)
    assert (field, code) == ("body", "MJML_INVALID")
    assert message.startswith(f"Line {line}: "), message
    assert fragment in message


def test_mjml_needs_its_root_element() -> None:
    assert only_error("<p>plain html</p>", MJML)[1] == "MJML_INVALID"
    assert only_error("", MJML)[2] == "Line 1: an MJML document must be wrapped in <mjml> ... </mjml>"


def test_less_than_inside_a_jinja_tag_is_an_mjml_pitfall() -> None:
    field, code, message = only_error(
        mjml("<mj-text>\n{% if subscriber.attributes.points < 10 %}low{% endif %}</mj-text>"), MJML
    )
    assert (field, code) == ("body", "MJML_INVALID")
    assert message.startswith("Line 6: ") and "'<' inside Jinja code" in message
    # The other direction parses fine.
    validate_content(
        mjml("<mj-text>{% if subscriber.attributes.points > 10 %}high{% endif %}</mj-text>"), MJML
    )


@pytest.mark.parametrize(
    "attribute",
    [
        'href="{{ subscriber.attributes.url | default("https://example.com") }}"',
        "href='{{ subscriber.attributes.url | default('https://example.com') }}'",
        "href='{{ subscriber.attributes.url | default(\"https://example.com\") }}'",
    ],
)
def test_quotes_inside_an_attribute_placeholder_are_an_mjml_pitfall(attribute: str) -> None:
    field, code, message = only_error(mjml(f"<mj-button\n  {attribute}>Go</mj-button>"), MJML)
    assert (field, code) == ("body", "MJML_INVALID")
    assert message.startswith("Line 6: ") and "quotes" in message


def test_single_quotes_inside_a_double_quoted_placeholder_are_fine() -> None:
    body = mjml(
        "<mj-button href=\"{{ subscriber.attributes.url | default('https://example.com') }}\">Go</mj-button>"
    )
    compiled = compile_content(body, MJML, subject="s")
    assert "{{ subscriber.attributes.url | default('https://example.com') }}" in compiled.html_source
    assert 'href="https://example.com"' in compiled.render(sample_context()).html


def test_multi_line_attribute_placeholder_is_an_mjml_pitfall() -> None:
    message = only_error(mjml('<mj-button href="{{ unsubscribe_url\n }}">Go</mj-button>'), MJML)[2]
    assert message.startswith("Line 5: ") and "one line" in message


@pytest.mark.parametrize(
    ("inner", "line"),
    [
        ('<mj-image src="a.png" width="{{ subscriber.attributes.width }}px" />', 5),
        (
            '<mj-social icon-size="{{ size }}"><mj-social-element name="github" href="https://github.com">GitHub</mj-social-element></mj-social>',
            5,
        ),
    ],
)
def test_templated_numeric_attributes_mjml_drops_are_reported(inner: str, line: int) -> None:
    field, code, message = only_error(mjml(inner), MJML)
    assert (field, code) == ("body", "MJML_INVALID")
    assert message.startswith(f"Line {line}: ") and "must be a literal" in message


def test_templated_column_width_is_reported() -> None:
    body = '<mjml>\n<mj-body>\n<mj-section>\n<mj-column width="{{ w }}">\n<mj-text>x</mj-text>\n</mj-column>\n</mj-section>\n</mj-body>\n</mjml>'
    message = only_error(body, MJML)[2]
    assert message.startswith("Line 4: ") and "'width' on <mj-column>" in message


def test_placeholder_in_an_attribute_the_element_lacks_is_reported() -> None:
    message = only_error(mjml('<mj-image src="a.png" color="{{ c }}" />'), MJML)[2]
    assert (
        message == "Line 5: <mj-image> has no attribute 'color'; MJML drops it together with its Jinja code"
    )


def test_jinja_between_attributes_is_reported_once() -> None:
    found = errors_of(mjml('<mj-text {% if vip %}color="red"{% endif %}>hi</mj-text>'), MJML)
    assert len(found) == 1
    assert found[0][1] == "MJML_INVALID" and found[0][2].startswith(
        "Line 5: Jinja code between the attributes"
    )


def test_templated_attributes_mjml_keeps_are_fine() -> None:
    body = mjml(
        '<mj-text color="{{ subscriber.attributes.color | default(\'#333333\') }}" font-size="{{ size }}px">x</mj-text>\n'
        '<mj-image src="https://cdn.example.com/{{ subscriber.id }}.png" alt="{{ subscriber.name }}" />\n'
        '<mj-button href="{{ unsubscribe_url }}" background-color="{{ brand }}">Go</mj-button>'
    )
    validate_content(body, MJML)


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
