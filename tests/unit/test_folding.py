"""Line folding of compiled MJML: short lines, same document."""

from __future__ import annotations

import email
import email.policy
from html.parser import HTMLParser
from typing import Any

from emailkit.db.tables.content import ContentFormat
from emailkit.domain.content.rendering import compile_content, sample_context
from emailkit.domain.content.rendering.folding import FOLD_AFTER, fold_lines, indent_style_dots
from emailkit.domain.ports.provider import Address, OutgoingMessage
from emailkit.providers.mime import MimeBuilder

CELL = '<td align="left" class="cell" style="font-size:0px;padding:10px 25px;word-break:break-word;">x</td>'


class _Events(HTMLParser):
    """What a browser builds from the markup: tags with their attributes, text, comments' words."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.events: list[Any] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.events.append(("start", tag, attrs))

    def handle_endtag(self, tag: str) -> None:
        self.events.append(("end", tag))

    def handle_data(self, data: str) -> None:
        self.events.append(("text", data))

    def handle_comment(self, data: str) -> None:
        # Outlook reads markup inside conditional comments, where attribute whitespace is just as free.
        self.events.append(("comment", data.split()))


def events(html: str) -> list[Any]:
    parser = _Events()
    parser.feed(html)
    parser.close()
    return parser.events


def test_long_lines_break_between_attributes_and_parse_to_the_same_document() -> None:
    source = "<table><tr>" + CELL * 40 + "</tr></table>\n<p>short</p>\n"
    folded = fold_lines(source)
    assert max(len(line) for line in folded.split("\n")) < FOLD_AFTER + len(CELL)
    assert folded.count("\n") > source.count("\n")
    assert events(folded) == events(source)
    # Only whitespace between attributes changed into line breaks.
    assert folded.replace("\n", " ").replace("  ", " ") == source.replace("\n", " ")


def test_text_attribute_values_and_raw_text_keep_their_spaces() -> None:
    long_text = "<p>" + "word " * 200 + "</p>"
    style = '<style type="text/css">' + ".a { color: red; } " * 60 + "</style>"
    value = 'title="' + "a b " * 120 + '"'
    source = f'{long_text}{style}<div {value} class="x">y</div>'
    folded = fold_lines(source)
    assert long_text in folded
    assert style in folded
    assert value in folded
    assert events(folded) == events(source)


def test_tags_with_jinja_constructs_are_left_alone() -> None:
    tag = '<a class="button" href="{{ url }}" style="color:#ffffff;text-decoration:none;">go</a>'
    statement = '<td {% if wide %}width="600"{% endif %} style="padding:0;" align="left">x</td>'
    source = (tag + statement) * 20
    assert fold_lines(source) == source
    # A construct elsewhere on the line does not stop static tags from folding.
    mixed = "{{ subscriber.name }}" + CELL * 20
    folded = fold_lines(mixed)
    assert folded != mixed
    assert folded.startswith("{{ subscriber.name }}")


def test_short_lines_come_back_as_the_same_object() -> None:
    source = "<p>hello</p>\n" * 100
    assert fold_lines(source) is source


def test_compiled_mjml_is_folded_renders_the_same_and_goes_out_7bit() -> None:
    sections = "".join(
        f"""<mj-section><mj-column>
        <mj-text>Paragraph {i} for {{{{ subscriber.name }}}}.</mj-text>
        <mj-button href="https://example.com/{i}">Read</mj-button>
        </mj-column></mj-section>"""
        for i in range(6)
    )
    body = f"<mjml><mj-body>{sections}</mj-body></mjml>"
    compiled = compile_content(body, ContentFormat.MJML, subject="Hi")
    rendered = compiled.render(sample_context())
    assert max(len(line) for line in rendered.html.split("\n")) < 998
    assert "Paragraph 5 for Ada Lovelace." in rendered.html
    assert "Paragraph 5 for Ada Lovelace." in rendered.text
    message = OutgoingMessage(
        delivery_id="1",
        sender="news@example.com",
        to=Address("ada@example.org"),
        from_=Address("news@example.com"),
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
    )
    parsed = email.message_from_bytes(MimeBuilder().build(message).data, policy=email.policy.default)
    html_part = next(p for p in parsed.walk() if p.get_content_type() == "text/html")
    assert html_part["Content-Transfer-Encoding"] == "7bit"
    # 7bit parts end with a line break, added when the HTML has none.
    assert html_part.get_content().replace("\r\n", "\n").rstrip("\n") == rendered.html.rstrip("\n")


def test_style_lines_starting_with_a_dot_are_indented_and_nothing_else() -> None:
    source = (
        "<html><head><style>\n.a { color: red; }\n  .b { color: blue; }\n.c{}</style>"
        "<style>{% if x %}\n.d {}{% endif %}</style></head>"
        "<body><pre>\n.kept as written</pre></body></html>"
    )
    spaced = indent_style_dots(source)
    assert spaced.count("\n .a") == 1 and spaced.count("\n .c{}") == 1
    assert "\n  .b" in spaced  # already indented
    assert "\n.d {}" in spaced  # a style block with Jinja code in it is left alone
    assert "\n.kept as written" in spaced  # outside <style>, a leading dot is content
    assert indent_style_dots("<p>no style</p>\n.x") == "<p>no style</p>\n.x"


def test_compiled_content_has_no_style_line_that_smtp_must_dot_stuff() -> None:
    for fmt, body in [
        (ContentFormat.HTML, "<html><head><style>\n.x { color: red }\n</style></head><body>Hi</body></html>"),
        (
            ContentFormat.MJML,
            "<mjml><mj-head><mj-style>\n.x { color: red }\n</mj-style></mj-head>"
            "<mj-body><mj-section><mj-column><mj-text>Hi</mj-text></mj-column></mj-section></mj-body></mjml>",
        ),
    ]:
        content = compile_content(body, fmt, subject="s")
        assert not [line for line in content.html_source.split("\n") if line.startswith(".")], fmt
        assert ".x { color: red }" in content.render(sample_context()).html
