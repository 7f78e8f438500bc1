"""Content rendering: MJML compiled once, Jinja2 in an immutable sandbox, a plain-text alternative, links.

The send pipeline calls ``compile_content`` once per campaign and ``CompiledContent.render`` per recipient;
the API validates with ``validate_content`` and previews with
``compile_content(...).render(sample_context())``.
"""

from emailkit.domain.content.rendering.content import (
    CompiledContent,
    RenderedContent,
    compile_content,
    render_failure_reason,
    validate_content,
    validate_plain_text,
)
from emailkit.domain.content.rendering.context import (
    campaign_vars,
    sample_campaign,
    sample_context,
    sample_subscriber,
    subscriber_vars,
    template_context,
)
from emailkit.domain.content.rendering.jinja import RenderError
from emailkit.domain.content.rendering.text import extract_links, html_to_text
from emailkit.domain.content.rendering.tracked import CLICK_CALL, PIXEL_CALL, TrackedTemplate

__all__ = [
    "CLICK_CALL",
    "PIXEL_CALL",
    "CompiledContent",
    "RenderError",
    "RenderedContent",
    "TrackedTemplate",
    "campaign_vars",
    "compile_content",
    "extract_links",
    "html_to_text",
    "render_failure_reason",
    "sample_campaign",
    "sample_context",
    "sample_subscriber",
    "subscriber_vars",
    "template_context",
    "validate_content",
    "validate_plain_text",
]
