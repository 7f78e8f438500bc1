"""Compile content once, render it per recipient; validate it the way it will be compiled."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from jinja2 import Template, TemplateSyntaxError, nodes

from emailkit.db.tables.content import ContentFormat
from emailkit.domain.content.rendering.context import sample_context
from emailkit.domain.content.rendering.folding import fold_lines, indent_style_dots
from emailkit.domain.content.rendering.jinja import (
    HTML_ENV,
    TEXT_ENV,
    RenderError,
    compile_ast,
    compile_template,
    parse_template,
    probe_env,
    probe_render,
    render_checked,
    render_failure,
)
from emailkit.domain.content.rendering.limits import RenderBudget, RenderTimeout, render_state, render_stream
from emailkit.domain.content.rendering.mjml import compile_mjml
from emailkit.domain.content.rendering.text import (
    html_to_text,
    text_template_source,
    tidy_plain_text,
    tidy_text,
)
from emailkit.domain.content.rendering.tracked import TrackedTemplate, emits_raw_markup, track_template
from emailkit.domain.content.rendering.view_link import with_view_line, with_view_link
from emailkit.domain.errors import DomainError, ErrorCode, FieldError

_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")
TextStrategy = Literal["plain_text", "derived_template", "per_render"]


@dataclass(frozen=True, slots=True)
class RenderedContent:
    subject: str
    html: str
    text: str


class CompiledContent:
    """Subject, HTML and text templates compiled once; ``render`` is the only per-recipient work.

    Thread-safe and immutable, so one instance can serve every batch of a campaign in a process.
    """

    __slots__ = (
        "_html",
        "_render_html",
        "_render_subject",
        "_render_text",
        "_subject",
        "_text",
        "_tracked",
        "body",
        "format",
        "html_source",
        "text_derived",
    )

    def __init__(
        self,
        *,
        body: str,
        fmt: ContentFormat,
        html_source: str,
        subject: Template,
        html: Template,
        text: Template | None,
        text_derived: bool,
    ) -> None:
        self.body = body
        self.format = fmt
        # The HTML after MJML compilation, Jinja placeholders intact (what ``_html`` was compiled from).
        self.html_source = html_source
        self.text_derived = text_derived
        self._subject = subject
        self._html = html
        self._text = text
        self._render_subject = fast_render(subject)
        self._render_html = fast_render(html)
        self._render_text = fast_render(text) if text is not None else None
        self._tracked: dict[tuple[bool, bool], TrackedTemplate] = {}

    @property
    def text_strategy(self) -> TextStrategy:
        """How the text alternative is made: given, derived once from the HTML, or converted per render."""
        if not self.text_derived:
            return "plain_text"
        return "per_render" if self._text is None else "derived_template"

    def tracked(self, *, clicks: bool, opens: bool) -> TrackedTemplate:
        """The HTML template with click tracking and/or the open pixel compiled in (computed once)."""
        key = (clicks, opens)
        found = self._tracked.get(key)
        if found is None:
            found = track_template(self.html_source, clicks=clicks, opens=opens, render_with=fast_render)
            self._tracked[key] = found
        return found

    def render(
        self, context: Mapping[str, Any], *, tracked: TrackedTemplate | None = None
    ) -> RenderedContent:
        """Render for one recipient; a failing template raises RenderError (TEMPLATE_RENDER or _SECURITY).

        With ``tracked``, the HTML comes from its template; the context must then hold the tracking calls.
        Each of the subject, HTML and text renders is held to the bounds of ``limits`` on its own.
        """
        if render_state.budget is not None:
            return self._render(context, tracked, None)
        # One budget object for the three renders (restarted for each): this runs once per recipient.
        budget = render_state.budget = RenderBudget()
        try:
            return self._render(context, tracked, budget)
        finally:
            render_state.budget = None

    def _render(
        self, context: Mapping[str, Any], tracked: TrackedTemplate | None, budget: RenderBudget | None
    ) -> RenderedContent:
        try:
            subject = self._render_subject(context)
        except Exception as exc:
            raise render_failure(exc, "subject") from None
        render_html = self._render_html
        if tracked is not None and tracked.render is not None:
            render_html = tracked.render
        if budget is not None:
            budget.restart()
        try:
            html = render_html(context)
        except Exception as exc:
            raise self._body_failure(exc, context) from None
        if self._render_text is None:
            text = html_to_text(html)
        else:
            if budget is not None:
                budget.restart()
            try:
                raw = self._render_text(context)
                text = tidy_text(raw) if self.text_derived else tidy_plain_text(raw)
            except Exception as exc:
                raise render_failure(exc, "body" if self.text_derived else "plainText") from None
        # A header must stay one line whatever the data holds (no header injection through a subscriber name).
        return RenderedContent(subject=_LINE_BREAKS.sub(" ", subject).strip(), html=html, text=text)

    def _body_failure(self, exc: Exception, context: Mapping[str, Any]) -> RenderError:
        if self.format is not ContentFormat.MJML or isinstance(exc, RenderTimeout):
            return render_failure(exc, "body")
        # Lines of the compiled HTML mean nothing to the author; the MJML source fails at the same expression.
        try:
            compile_template(self.body, HTML_ENV, "body").render(context)
        except Exception as source_exc:
            if not isinstance(source_exc, DomainError):
                return render_failure(source_exc, "body")
        return render_failure(exc, "body", locate=False)


def fast_render(template: Template) -> Callable[[Mapping[str, Any]], str]:
    """``template.render`` for a mapping, minus its per-call ``dict()`` of the template's globals.

    Jinja walks the template's globals, a ``ChainMap``, twice per render (copying them into the context and
    listing their names) at a Python-level call per global: measured at ≈40% of rendering a recipient's
    subject, HTML and text. Here the globals are flattened once and merged with the variables in C; the
    context (built as ``jinja2.runtime.new_context`` builds it), the output and the rewritten traceback of
    a failure are those of ``render``. The output is streamed under the render bounds (see ``limits``).
    """
    flat_globals = dict(template.globals)
    environment = template.environment
    make_context = environment.context_class
    root = template.root_render_func
    name, blocks = template.name, template.blocks

    def render(context: Mapping[str, Any]) -> str:
        ctx = make_context(environment, {**flat_globals, **context}, name, blocks, globals=flat_globals)
        try:
            return render_stream(root(ctx))
        except Exception:
            return environment.handle_exception()

    return render


def _derived_text(html_source: str, html_ast: nodes.Template, html: Template) -> Template | None:
    """The text template derived from the HTML once, if it renders exactly what html_to_text would."""
    # Markup injected unescaped reads differently once it is text.
    if emits_raw_markup(html_ast):
        return None
    try:
        text = TEXT_ENV.from_string(text_template_source(html_source))
        sample = sample_context()
        agrees = tidy_text(text.render(sample)) == html_to_text(html.render(sample))
    except Exception:
        # Unusual markup or a template that cannot render the sample: convert every rendered HTML instead.
        return None
    return text if agrees else None


def _compiled_html(body: str) -> tuple[str, nodes.Template]:
    """MJML to HTML, parsed as the Jinja template it still is."""
    # Jinja first: the MJML checks rely on balanced Jinja delimiters.
    parse_template(body, HTML_ENV, "body")
    html = compile_mjml(body, "body")
    try:
        return html, HTML_ENV.parse(html)
    except TemplateSyntaxError as exc:
        raise DomainError.single(
            ErrorCode.MJML_INVALID,
            f"MJML compilation changed the Jinja code ({exc.message}); keep Jinja tags inside text, "
            "attribute values or around whole elements",
            "body",
        ) from None


def _body(body: str, fmt: ContentFormat, view_link: bool) -> tuple[str, nodes.Template, Template]:
    if fmt is ContentFormat.MJML:
        html, ast = _compiled_html(body)
        if view_link:
            html = with_view_link(html)
            ast = HTML_ENV.parse(html)
    else:
        if view_link:
            # One line added, no line break: errors still name the author's lines.
            body = with_view_link(body)
        html, ast = body, parse_template(body, HTML_ENV, "body")
    return html, ast, compile_ast(ast, HTML_ENV, "body")


@lru_cache(maxsize=32)
def _compile(
    body: str, fmt: ContentFormat, subject: str, plain_text: str | None, view_link: bool
) -> CompiledContent:
    errors: list[FieldError] = []
    subject_template = _collect(errors, lambda: compile_template(subject, TEXT_ENV, "subject"))
    text_template = None
    if plain_text is not None:
        text_template = _collect(errors, lambda: compile_template(plain_text, TEXT_ENV, "plainText"))
        if view_link and text_template is not None:
            text_template = compile_template(with_view_line(plain_text), TEXT_ENV, "plainText")
    compiled = _collect(errors, lambda: _body(body, fmt, view_link))
    if errors:
        raise DomainError(errors)
    html_source, html_ast, html_template = compiled
    text = text_template if plain_text is not None else _derived_text(html_source, html_ast, html_template)
    # MJML's multi-KB lines would send every message base64 (its authors never see these lines); a style line
    # starting with "." would cost every message SMTP's dot-stuffing copy.
    adjusted = indent_style_dots(fold_lines(html_source) if fmt is ContentFormat.MJML else html_source)
    if adjusted != html_source:
        html_source, html_template = adjusted, compile_template(adjusted, HTML_ENV, "body")
    return CompiledContent(
        body=body,
        fmt=fmt,
        html_source=html_source,
        subject=subject_template,
        html=html_template,
        text=text,
        text_derived=plain_text is None,
    )


def compile_content(
    body: str,
    fmt: ContentFormat,
    *,
    subject: str,
    plain_text: str | None = None,
    view_link: bool = False,
) -> CompiledContent:
    """Compile MJML once to HTML and every Jinja template once, for any number of renders.

    With ``view_link`` the HTML (and a hand-written text alternative) starts with a "View in browser" link to
    ``webview_url`` (see ``view_link``). Raises DomainError (TEMPLATE_SYNTAX, TEMPLATE_SECURITY, MJML_INVALID)
    when the content cannot compile. Recent results are cached, so every batch of a campaign handled by one
    process shares the compilation.
    """
    return _compile(body, ContentFormat(fmt), subject, plain_text, view_link)


def _collect(errors: list[FieldError], work: Callable[[], Any]) -> Any:
    try:
        return work()
    except DomainError as exc:
        errors.extend(exc.errors)
        return None


def _validate_body(body: str, fmt: ContentFormat, field: str) -> None:
    template = compile_template(body, probe_env(HTML_ENV), field)
    if fmt is ContentFormat.MJML:
        try:
            _compiled_html(body)
        except DomainError as exc:
            raise DomainError([FieldError(field, e.message, e.code) for e in exc.errors]) from None
    # The source (not the compiled HTML) is rendered so that errors point at the author's own lines.
    render_checked(template, sample_context(), field)


def validate_content(
    body: str, fmt: ContentFormat, *, subject: str | None = None, field: str = "body"
) -> None:
    """Raise DomainError listing every problem of the subject and the body, each with its line.

    Codes: TEMPLATE_SYNTAX (Jinja syntax, unknown filters, include/extends), MJML_INVALID (MJML that does not
    compile or that mjml-python would silently mangle), TEMPLATE_SECURITY (sandbox escapes, found statically
    and by a sample render), TEMPLATE_RENDER (the sample render fails). Values the sample context lacks
    (custom attributes, transactional data) do not count as failures here.
    """
    errors: list[FieldError] = []
    if subject is not None:
        _collect(errors, lambda: probe_render(subject, TEXT_ENV, sample_context(), "subject"))
    _collect(errors, lambda: _validate_body(body, ContentFormat(fmt), field))
    if errors:
        raise DomainError(errors)


def validate_plain_text(text: str, *, field: str = "plainText") -> None:
    """Check a hand-written text alternative (a Jinja template rendered without HTML escaping)."""
    probe_render(text, TEXT_ENV, sample_context(), field)


def render_failure_reason(exc: DomainError) -> str:
    """How a render failure reads on a failed delivery: ``TEMPLATE_LIMIT in body: Line 3: ...``."""
    return "; ".join(
        f"{e.code.value} in {e.field}: {e.message}" if e.field else f"{e.code.value}: {e.message}"
        for e in exc.errors
    )
