"""Content for the rendering tests: the format shorthands, an MJML wrapper and a full MJML newsletter."""

from __future__ import annotations

from emailkit.db.tables.content import ContentFormat

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
