"""Jinja2 under an immutable sandbox: environments, error reporting with lines, and a static safety check.

Undefined policy (documented for template authors): a missing variable or attribute renders as an empty
string, and so does a chain of lookups on it (``{{ subscriber.attributes.plan.name }}``); ``None`` renders
empty too.
Operations that need a real value (arithmetic, calls, comparisons) on something missing fail that render with
TEMPLATE_RENDER; guard them with ``default``: ``{{ (subscriber.attributes.points | default(0)) + 10 }}``.
"""

from __future__ import annotations

import operator
import traceback
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

from jinja2 import ChainableUndefined, Template, TemplateSyntaxError, UndefinedError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from markupsafe import Markup

from emailkit.domain.content.rendering import limits
from emailkit.domain.content.rendering.guards import (
    BoundedFormatMixin,
    bounded_filters,
    bounded_method,
    check_stringify,
)
from emailkit.domain.content.rendering.limits import TemplateLimitExceeded
from emailkit.domain.errors import DomainError, ErrorCode, FieldError

# Bounds that keep one render cheap: a template is run once per recipient, hundreds of thousands of times.
# The resource bounds every render is held to are in ``limits``.
MAX_RANGE = 10_000
MAX_EXPONENT = 64

TEMPLATE_FILENAME = "<template>"


class RenderError(DomainError):
    """A template failed while rendering (a per-recipient failure when it happens while sending)."""


def _bounded_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise TemplateLimitExceeded(f"range() is limited to {MAX_RANGE} items in templates")
    return rng


_render_state = limits.render_state
_SCALARS = frozenset({int, float, bool, Markup})


def _charge(value: str) -> None:
    budget = _render_state.budget
    if budget is not None:
        budget.build(len(value))


_LARGE_OUTPUT = limits.LARGE_OUTPUT_CHARS


def _finalize(value: Any) -> Any:
    """Every ``{{ expression }}`` of the root passes here before it is output (once per expression on the
    per-recipient hot path). The root's output is measured as it streams; a large value is counted now."""
    cls = type(value)
    if cls is str:
        if len(value) > _LARGE_OUTPUT:
            _charge(value)
        return value
    if value is None:
        return ""
    if cls not in _SCALARS:
        check_stringify(value)
    return value


def _finalize_captured(value: Any) -> Any:
    """``_finalize`` for output captured by a macro, a call or filter block or ``{% set %}``: all counted."""
    if type(value) is str:
        _charge(value)
        return value
    return _finalize(value)


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator with every loop and every ``~`` going through the render's bounds."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        # The iterable becomes ``environment.bounded_loop(iterable)``; put back afterwards, so that the tree
        # can be compiled again.
        original = node.iter
        guard = nodes.EnvironmentAttribute("bounded_loop", lineno=original.lineno)
        node.iter = nodes.Call(guard, [original], [], None, None, lineno=original.lineno)
        try:
            super().visit_For(node, frame)
        finally:
            node.iter = original

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        # Text appended to a buffer is not streamed, so every expression there is counted as it is produced.
        if frame.buffer is not None and finalize.src == "environment.finalize(":
            finalize = self._FinalizeInfo(finalize.const, "environment.finalize_captured(")
        super()._output_child_pre(node, frame, finalize)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            func = "(environment.join_markup if context.eval_ctx.volatile else environment.join_str)"
        elif frame.eval_ctx.autoescape:
            func = "environment.join_markup"
        else:
            func = "environment.join_str"
        self.write(f"{func}((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _checked_join(join: Any, values: Any) -> str:
    values = list(values)
    for value in values:
        check_stringify(value)
    limits.check_chars(sum(len(v) if isinstance(v, str) else 0 for v in values), "joining with ~")
    return limits.charge(join(values))  # type: ignore[no-any-return]


class _BoundedFormatter(BoundedFormatMixin, SandboxedFormatter):
    pass


class _BoundedEscapeFormatter(BoundedFormatMixin, SandboxedEscapeFormatter):
    pass


class _Sandbox(ImmutableSandboxedEnvironment):
    # Only the operators whose results can explode in size are checked; the rest stay on the fast path.
    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _BoundedCodeGenerator
    concat = staticmethod(limits.bounded_concat)

    finalize_captured = staticmethod(_finalize_captured)

    def bounded_loop(self, iterable: Any) -> Any:
        budget = limits.current_budget()
        return iterable if budget is None else budget.iterate(iterable)

    def join_markup(self, values: Any) -> str:
        return _checked_join(markup_join, values)

    def join_str(self, values: Any) -> str:
        return _checked_join(str_join, values)

    def wrap_str_format(self, value: Any) -> Any:
        # Called on every attribute a template reads from an object: string methods that can grow text
        # (center, ljust, replace, join, format...) are swapped for bounded ones here.
        bounded = bounded_method(value)
        if bounded is not None:
            return bounded
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        owner = value.__self__
        formatter = (
            _BoundedEscapeFormatter(self, escape=owner.escape)
            if hasattr(owner, "__html_format__")
            else _BoundedFormatter(self)
        )
        str_type, is_map = type(owner), value.__name__ == "format_map"

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                kwargs, args = args[0], ()
            result: str = str_type(formatter.vformat(owner, args, kwargs))
            return result

        return bounded_format

    def unsafe_undefined(self, obj: Any, attribute: str) -> NoReturn:
        # The stock sandbox returns an Undefined that prints as "" and so hides the attempt; fail loudly.
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__} is not allowed")

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Keys first for plain dicts (the context is made of them): `subscriber.attributes.items` is the
        # subscriber's "items" attribute rather than dict.items, and a hit skips a raised AttributeError.
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise TemplateLimitExceeded(f"exponents above {MAX_EXPONENT} are not allowed in templates")
            limits.check_power(left, right)
            result = operator.pow(left, right)
        elif operator_name == "*":
            limits.check_product(left, right)
            result = operator.mul(left, right)
        elif operator_name == "%":
            if isinstance(left, str):
                for value in (
                    right.values()
                    if isinstance(right, dict)
                    else right
                    if isinstance(right, tuple)
                    else (right,)
                ):
                    check_stringify(value)
                limits.check_printf(left, right)
            result = operator.mod(left, right)
        else:
            limits.check_sum(left, right)
            result = operator.add(left, right)
        return limits.charge(result)


class _ProbeUndefined(ChainableUndefined):
    """Stands in, during validation only, for values that real recipients or callers may provide.

    The sample context cannot know every custom attribute or transactional variable, so a missing value
    must not make a sound template look broken; it behaves like a neutral value instead.
    """

    __slots__ = ()

    def _self(self, *_: Any, **__: Any) -> Any:
        return self

    def _false(self, *_: Any, **__: Any) -> Any:
        return False

    def _zero(self, *_: Any, **__: Any) -> Any:
        return 0

    # Undefined makes these operators raise; here they return a neutral value instead.
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _self
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = _self
    __mod__ = __rmod__ = __pos__ = __neg__ = __pow__ = __rpow__ = __call__ = _self
    __lt__ = __le__ = __gt__ = __ge__ = _false
    __int__ = __index__ = __round__ = __abs__ = _zero

    def __float__(self, *_: Any, **__: Any) -> Any:
        return 0.0

    def __format__(self, spec: str) -> str:
        return ""

    def __hash__(self) -> int:
        return id(type(self))


def _environment(*, autoescape: bool, undefined: type[ChainableUndefined]) -> _Sandbox:
    env = _Sandbox(autoescape=autoescape, undefined=undefined, finalize=_finalize, auto_reload=False)
    # lipsum() can produce unbounded text and no template has a use for it in a real email.
    env.globals.pop("lipsum", None)
    env.globals["range"] = _bounded_range
    env.filters.update(bounded_filters(env.filters))
    return env


HTML_ENV = _environment(autoescape=True, undefined=ChainableUndefined)
TEXT_ENV = _environment(autoescape=False, undefined=ChainableUndefined)
_PROBE_HTML_ENV = _environment(autoescape=True, undefined=_ProbeUndefined)
_PROBE_TEXT_ENV = _environment(autoescape=False, undefined=_ProbeUndefined)


def probe_env(env: _Sandbox) -> _Sandbox:
    return _PROBE_HTML_ENV if env.autoescape else _PROBE_TEXT_ENV


def at_line(line: int | None, message: str) -> str:
    return f"Line {line}: {message}" if line else message


def syntax_error(exc: TemplateSyntaxError, field: str) -> DomainError:
    return DomainError.single(ErrorCode.TEMPLATE_SYNTAX, at_line(exc.lineno, exc.message or str(exc)), field)


_UNSUPPORTED: dict[type[nodes.Node], str] = {
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from ... import",
}


def _static_problems(ast: nodes.Template, source: str, env: _Sandbox, field: str) -> Iterator[FieldError]:
    for node in ast.find_all(tuple(_UNSUPPORTED)):
        yield FieldError(
            field,
            at_line(
                node.lineno,
                f"{{% {_UNSUPPORTED[type(node)]} %}} is not supported: templates are self-contained",
            ),
            ErrorCode.TEMPLATE_SYNTAX,
        )
    # Jinja itself only notices these while generating code; checked here so that a parse is enough.
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        known = env.filters if isinstance(node, nodes.Filter) else env.tests
        if node.name not in known:
            what = "filter" if isinstance(node, nodes.Filter) else "test"
            yield FieldError(
                field, at_line(node.lineno, f"No {what} named {node.name!r}."), ErrorCode.TEMPLATE_SYNTAX
            )
    blocked: dict[int, list[str]] = {}
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        name = node.attr if isinstance(node, nodes.Getattr) else None
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value if isinstance(node.arg.value, str) else None
        if name is not None and name.startswith("_"):
            blocked.setdefault(node.lineno, []).append(name)
    lines = source.splitlines()
    for line, names in sorted(blocked.items()):
        # In the order written, so `''.__class__.__mro__` reads as one problem: '__class__', '__mro__'.
        text = lines[line - 1] if line <= len(lines) else ""
        listed = ", ".join(repr(n) for n in sorted(set(names), key=lambda n: (text.find(n), n)))
        yield FieldError(
            field,
            at_line(
                line,
                f"access to {listed} is not allowed (the template sandbox blocks names starting with '_')",
            ),
            ErrorCode.TEMPLATE_SECURITY,
        )


def parse_template(source: str, env: _Sandbox, field: str) -> nodes.Template:
    """Parse and check statically; syntax problems and unsupported code become field errors with the line."""
    try:
        ast = env.parse(source)
    except TemplateSyntaxError as exc:
        raise syntax_error(exc, field) from None
    problems = list(_static_problems(ast, source, env, field))
    if problems:
        raise DomainError(problems)
    return ast


def compile_ast(ast: nodes.Template, env: _Sandbox, field: str) -> Template:
    try:
        return env.from_string(ast)
    except TemplateSyntaxError as exc:
        raise syntax_error(exc, field) from None


def compile_template(source: str, env: _Sandbox, field: str) -> Template:
    return compile_ast(parse_template(source, env, field), env, field)


def _template_line(exc: BaseException) -> int | None:
    # Jinja rewrites tracebacks so that frames inside a template carry the template's own line numbers.
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == TEMPLATE_FILENAME]
    return frames[-1].lineno if frames else None


def render_failure(exc: Exception, field: str, *, locate: bool = True) -> RenderError:
    """The error for a failed render, at the template line where it happened when ``locate`` is set."""
    line = _template_line(exc) if locate else None
    if isinstance(exc, TemplateLimitExceeded):
        return RenderError(
            FieldError(field, at_line(line, f"over a template limit: {exc}"), ErrorCode.TEMPLATE_LIMIT)
        )
    if isinstance(exc, RecursionError | MemoryError):
        return RenderError(
            FieldError(
                field, at_line(line, f"over a template limit: {type(exc).__name__}"), ErrorCode.TEMPLATE_LIMIT
            )
        )
    if isinstance(exc, SecurityError):
        return RenderError(FieldError(field, at_line(line, str(exc)), ErrorCode.TEMPLATE_SECURITY))
    if isinstance(exc, UndefinedError):
        detail = f"{exc} (guard values that may be missing with the default filter)"
    else:
        detail = f"{type(exc).__name__}: {exc}"
    return RenderError(FieldError(field, at_line(line, detail), ErrorCode.TEMPLATE_RENDER))


def render_checked(template: Template, context: Mapping[str, Any], field: str) -> str:
    try:
        return template.render(context)  # bounded: the environment's concat streams the render
    except Exception as exc:
        raise render_failure(exc, field) from None


def probe_render(source: str, env: _Sandbox, context: Mapping[str, Any], field: str) -> None:
    """Compile and run ``source`` once against ``context`` with missing values tolerated."""
    template = compile_template(source, probe_env(env), field)
    render_checked(template, context, field)
