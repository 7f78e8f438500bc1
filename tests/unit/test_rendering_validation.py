"""Content validation (`validate_content`): Jinja syntax, the sandbox, template limits and render errors, and
the MJML pitfalls it reports with their line."""

from __future__ import annotations

import pytest

from emailkit.db.tables.content import ContentFormat
from emailkit.domain.content.rendering import (
    RenderError,
    compile_content,
    sample_context,
    validate_content,
    validate_plain_text,
)
from emailkit.domain.errors import DomainError
from tests.support.rendering import HTML, MJML, NEWSLETTER, mjml


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
