"""Per-recipient render cost of a personalised 100-line MJML newsletter.

Prints microseconds per render (subject + HTML + text alternative) on the path the send pipeline uses, next
to what converting every rendered HTML to text would cost. Run: python bench/render.py [--renders N]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from emailkit.db.tables.content import ContentFormat
from emailkit.domain.content.rendering import compile_content, html_to_text, sample_context

SECTION = """    <mj-section padding="10px 0">
      <mj-column>
        <mj-image src="https://cdn.example.com/articles/{n}.jpg" alt="Article {n}" width="560px" />
        <mj-text font-size="18px" font-weight="bold">{n}. {{{{ articles[{i}].title }}}}</mj-text>
        <mj-text>{{{{ articles[{i}].summary }}}}
          Hand-picked for {{{{ subscriber.attributes.city | default('you') }}}}.</mj-text>
        <mj-button href="https://example.com/articles/{n}?u={{{{ subscriber.id }}}}">Read more</mj-button>
      </mj-column>
    </mj-section>"""

NEWSLETTER = (
    """<mjml>
  <mj-head>
    <mj-title>{{ campaign.subject }}</mj-title>
    <mj-preview>This week: {{ articles[0].title }}</mj-preview>
    <mj-attributes>
      <mj-all font-family="Helvetica, Arial, sans-serif" />
      <mj-text font-size="15px" line-height="22px" color="#333333" />
    </mj-attributes>
  </mj-head>
  <mj-body background-color="#f4f4f4">
    <mj-section background-color="#ffffff">
      <mj-column>
        <mj-image src="https://cdn.example.com/logo.png" alt="Example News" width="160px" />
        <mj-text font-size="22px">
          Hello {{ subscriber.attributes.first_name | default(subscriber.name) }},</mj-text>
        <mj-text>Here is what happened this week.
          {% if subscriber.attributes.plan == 'pro' %}As a pro member you read it first.{% endif %}</mj-text>
      </mj-column>
    </mj-section>
"""
    + "\n".join(SECTION.format(n=i + 1, i=i) for i in range(8))
    + """
    <mj-section>
      <mj-column>
        <mj-divider border-color="#dddddd" />
        <mj-text font-size="12px" color="#888888">You receive this because {{ subscriber.email }} subscribed.
          <a href="{{ unsubscribe_url }}">Unsubscribe</a></mj-text>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>
"""
)


def _context() -> dict[str, Any]:
    articles = [
        {
            "title": f"Story number {i + 1}",
            "summary": "A short summary of the story, two sentences long. " * 2,
        }
        for i in range(8)
    ]
    return sample_context(articles=articles)


def _per_call_us(fn: Any, n: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--renders", type=int, default=2000)
    n = parser.parse_args().renders

    lines = NEWSLETTER.count("\n")
    start = time.perf_counter()
    compiled = compile_content(
        NEWSLETTER, ContentFormat.MJML, subject="{{ campaign.subject }} for {{ subscriber.name }}"
    )
    compile_ms = (time.perf_counter() - start) * 1e3
    context = _context()
    rendered = compiled.render(context)

    render_us = _per_call_us(lambda: compiled.render(context), n)
    convert_us = _per_call_us(lambda: html_to_text(rendered.html), max(n // 10, 50))

    print(
        f"MJML newsletter: {lines} lines, rendered HTML {len(rendered.html) / 1024:.1f} KB, "
        f"text {len(rendered.text)} chars"
    )
    print(f"compile once (MJML + Jinja + text template): {compile_ms:.1f} ms")
    print(
        f"render per recipient (subject + HTML + text): {render_us:.1f} µs "
        f"(text alternative: {compiled.text_strategy})"
    )
    print(f"html_to_text of the rendered HTML, for comparison: {convert_us:.1f} µs")


if __name__ == "__main__":
    main()
