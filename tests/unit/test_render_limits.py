"""Every render is bounded: template bombs fail fast with TEMPLATE_LIMIT, real templates render as before."""

from __future__ import annotations

import time
from typing import Any

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from emailkit.db.tables.content import ContentFormat
from emailkit.domain.content.rendering import RenderError, compile_content, sample_context, validate_content
from emailkit.domain.content.rendering.jinja import HTML_ENV, TEXT_ENV
from emailkit.domain.content.rendering.limits import (
    MAX_LOOP_ITERATIONS,
    MAX_OUTPUT_CHARS,
    RENDER_TIMEOUT_SECONDS,
    RenderBudget,
    render_stream,
)
from emailkit.domain.errors import DomainError

HTML = ContentFormat.HTML

# Each of these froze the API or built a gigabyte per request before renders were bounded.
BOMBS = {
    "power": "{{ ((((9**64)**64)**64)**64)**64 > 1 }}",
    "center": "{{ 'x'|center(300000000) }}",
    "format": "{{ '%0300000000d'|format(1) }}",
    "percent": "{{ '%0300000000d' % 1 }}",
    "percent_star": "{{ '%*d' % (300000000, 1) }}",
    "str_format": "{{ '{:>300000000}'.format(1) }}",
    "ljust": "{{ 'x'.ljust(300000000) }}",
    "zfill": "{{ '1'.zfill(300000000) }}",
    "repeat": "{{ 'x' * 10**9 }}",
    "list_repeat": "{{ ([1] * 10**8)|length }}",
    "big_loop": "{% set s = 'x' * 100000 %}{% for i in range(10000) %}{{ s }}{% endfor %}",
    "literal_loop": "{% for i in range(10000) %}" + "y" * 100_000 + "{% endfor %}",
    "nested_loops": "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
    "captured_loop": "{% set s = 'x' * 100000 %}{% set b %}{% for i in range(10000) %}{{ s }}{% endfor %}"
    "{% endset %}ok",
    "captured_small": "{% set s = 'x' * 1000 %}{% set b %}{% for i in range(100) %}{% for j in range(1000) %}"
    "{{ s }}{% endfor %}{% endfor %}{% endset %}ok",
    "doubling": "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s|length }}",
    "doubling_plus": "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}"
    "{% endfor %}{{ ns.s|length }}",
    "replace": "{% set s = 'x' * 100000 %}{{ s.replace('x', s) }}",
    "join": "{% set s = 'x' * 100000 %}{{ ([s] * 100000)|join }}",
    "print_list": "{% set s = 'x' * 100000 %}{{ [s] * 100000 }}",
    "to_bytes": "{{ (1).to_bytes(1000000000, 'big')|length }}",
    "batch": "{{ [1]|batch(100000000, 0)|list|length }}",
    "map_center": "{% set l = range(10000)|map('center', 1000000)|list %}{{ l|length }}",
    "exponential_macro": "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
    "{{ f(40) }}",
}
# Bombs that only a clock can stop (no single operation is large); everything else stops well before it.
SLOW = {"exponential_macro"}


def _limit_error(work: Any) -> tuple[str, float]:
    start = time.monotonic()
    with pytest.raises(DomainError) as caught:
        work()
    elapsed = time.monotonic() - start
    [error] = caught.value.errors
    assert error.code.value == "TEMPLATE_LIMIT", error
    assert "over a template limit" in error.message
    return error.message, elapsed


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_each_bomb_is_a_template_limit_in_validation_and_in_the_render(name: str) -> None:
    source = "<p>Hi</p>\n" + BOMBS[name]
    quick = RENDER_TIMEOUT_SECONDS + 1.5 if name in SLOW else 1.0
    _, elapsed = _limit_error(lambda: validate_content(source, HTML, subject="s"))
    assert elapsed < quick
    compiled = compile_content(source, HTML, subject="s")
    message, elapsed = _limit_error(lambda: compiled.render(sample_context()))
    assert elapsed < quick
    if name not in {"big_loop", "literal_loop"}:
        # Found at the expression that went over; output limits are found once the text is out.
        assert message.startswith("Line 2: ")


def test_a_failed_render_is_a_render_error() -> None:
    compiled = compile_content(
        "{% for i in range(10000) %}{{ '%05000d' % 1 }}{% endfor %}", HTML, subject="s"
    )
    with pytest.raises(RenderError):
        compiled.render(sample_context())


def test_the_slow_bomb_stops_at_the_time_limit_not_before() -> None:
    compiled = compile_content(BOMBS["exponential_macro"], HTML, subject="s")
    message, elapsed = _limit_error(lambda: compiled.render(sample_context()))
    assert "longer than" in message
    assert RENDER_TIMEOUT_SECONDS <= elapsed < RENDER_TIMEOUT_SECONDS + 1.5


def test_each_render_has_its_own_budget() -> None:
    # 60% of the iteration budget per render: any number of renders in a row, each within bounds.
    n = int(MAX_LOOP_ITERATIONS * 0.6)
    compiled = compile_content(
        f"{{% for i in range(100) %}}{{% for j in range({n // 100}) %}}{{% endfor %}}{{% endfor %}}ok",
        HTML,
        subject="s",
    )
    assert [compiled.render(sample_context()).html for _ in range(3)] == ["ok"] * 3


def test_output_up_to_the_bound_is_allowed() -> None:
    compiled = compile_content(
        "{% set s = 'x' * 10000 %}{% for i in range(400) %}{{ s }}{% endfor %}", HTML, subject="s"
    )
    assert len(compiled.render(sample_context()).html) == 4_000_000 < MAX_OUTPUT_CHARS


def test_output_is_checked_as_it_is_produced() -> None:
    produced: list[int] = []

    def pieces() -> Any:
        for i in range(1_000_000):
            produced.append(i)
            yield "x" * 100_000

    with pytest.raises(Exception, match="output is longer"):
        render_stream(pieces())
    # Stopped within one chunk of pieces past the bound, not after a million of them.
    assert MAX_OUTPUT_CHARS // 100_000 < len(produced) <= MAX_OUTPUT_CHARS // 100_000 + 32


def test_template_render_outside_the_fast_path_is_bounded_too() -> None:
    template = HTML_ENV.from_string(
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
    )
    with pytest.raises(Exception, match="iterations"):
        template.render()


def test_a_budget_is_installed_only_while_rendering() -> None:
    from emailkit.domain.content.rendering.limits import current_budget

    seen: list[RenderBudget | None] = []
    template = TEXT_ENV.from_string("{{ probe() }}")
    template.render(probe=lambda: seen.append(current_budget()) or "")
    assert seen[0] is not None and current_budget() is None


NORMAL = [
    "<ul>{% for item in items %}<li class=\"{{ loop.cycle('odd', 'even') }}\">{{ loop.index }}/{{ loop.length }} "
    "{{ item.name|title }}{% if not loop.last %},{% endif %}</li>{% endfor %}</ul>",
    "{% for row in items|batch(2, '-') %}{{ row|map(attribute='name')|join('|') if row[0] is mapping else row }}"
    "{% endfor %}",
    "{{ '%05.2f'|format(3.14159) }} {{ '%-8s|' % 'ab' }} {{ '%(a)s=%(b)d' % {'a': 'x', 'b': 2} }}",
    "{{ '{:>8}|{:,}|{:.3f}'.format('r', 1234567, 2.5) }} {{ 'x'.center(9, '*') }} {{ '7'.zfill(3) }}",
    "{{ 'a-b-c'.replace('-', ' / ') }} {{ ', '.join(['a', 'b']) }} {{ 'Name'|center(12) }}|",
    "{{ items|map(attribute='price')|sum }} {{ (items|first).name ~ '!' }} {{ 2 ** 10 }} {{ 3 * 'ab' }}",
    "{% set total = namespace(n=0) %}{% for i in items %}{% set total.n = total.n + i.price %}{% endfor %}"
    "{{ total.n }} {{ items|tojson }}",
    "{% macro card(t) %}<b>{{ t|upper }}</b>{{ caller() if caller else '' }}{% endmacro %}"
    "{% call card('x') %}inner{% endcall %}{{ card('y') }}",
    "{% set nodes = [{'n': 'a', 'c': [{'n': 'b', 'c': []}]}] %}{% for x in nodes recursive %}{{ x.n }}"
    "{% if x.c %}[{{ loop(x.c) }}]{% endif %}{% endfor %}",
    "{% for k, v in {'b': 1, 'a': 2}|dictsort %}{{ k }}={{ v }};{% else %}none{% endfor %}"
    "{% for i in [] %}x{% else %}empty{% endfor %}{% for i in range(5) if i is odd %}{{ i }}{% endfor %}",
    "{{ 'long words here'|wordwrap(5) }} {{ 'a\nb'|indent(2, true) }} {{ 'abc'|truncate(5) }} "
    "{{ [3, 1, 2]|sort|list }} {{ [1, 2, 3][1:] + [4] }} {{ 10 % 3 }} {{ 'x' ~ 1 ~ none }}",
]


@pytest.mark.parametrize("source", NORMAL)
@pytest.mark.parametrize("autoescape", [True, False])
def test_normal_templates_render_exactly_as_an_unbounded_sandbox_does(source: str, autoescape: bool) -> None:
    context = {
        "items": [{"name": "tea", "price": 3}, {"name": "<cake>", "price": 4}, {"name": "jam", "price": 2}]
    }
    stock = ImmutableSandboxedEnvironment(autoescape=autoescape).from_string(source).render(context)
    ours = (HTML_ENV if autoescape else TEXT_ENV).from_string(source).render(context)
    assert ours == stock
