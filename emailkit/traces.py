"""OpenTelemetry traces: optional (``pip install "emailkit[otel]"``), and on only when the standard OTEL_*
variables ask for them.

Off, a span costs one ``is None`` check: nothing from OpenTelemetry is imported, so a process without the
extra pays nothing. On, :func:`configure` builds the SDK's tracer provider from the environment as the
specification describes (OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_*, OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_PROPAGATORS, OTEL_SDK_DISABLED).

Spans cover a request, a GraphQL operation, a job (its context travels in the Dramatiq message, see
``emailkit.tasks.broker.tracing``), each request to a provider (up to a few hundred messages, never one span
per message) and each provider webhook.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)

SERVICE_NAME = "emailkit"
# The SDK's entry point group, where every exporter package registers itself by name.
EXPORTER_GROUP = "opentelemetry_traces_exporter"
AttributeValue = str | bool | int | float

_tracer: Tracer | None = None


def wanted(env: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces: an exporter or an OTLP endpoint named, the SDK not disabled."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure(env: Mapping[str, str] | None = None) -> None:
    """Traces on or off for this process, as the environment says (a composition root calls this once)."""
    env = os.environ if env is None else env
    if not wanted(env):
        return
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_* variables ask for traces but emailkit[otel] is not installed; tracing stays off")
        return
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, read by Resource.create, override this default.
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    for exporter in _exporters(env):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    use(provider)


def use(provider: TracerProvider | None) -> None:
    """Trace into `provider` from now on (None: off); :func:`configure` calls it, tests too."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer("emailkit")


def active() -> bool:
    return _tracer is not None


def _exporters(env: Mapping[str, str]) -> list[SpanExporter]:
    names = [n.strip() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",") if n.strip()]
    found = []
    for name in names:
        if name == "otlp":
            protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            # The extra ships the HTTP exporter; gRPC needs opentelemetry-exporter-otlp-proto-grpc as well.
            name = "otlp_proto_grpc" if protocol == "grpc" else "otlp_proto_http"
        matches = list(entry_points(group=EXPORTER_GROUP, name=name))
        if not matches:
            log.warning("OTEL_TRACES_EXPORTER: no exporter named %r is installed; it is left out", name)
            continue
        found.append(matches[0].load()())
    return found


@contextmanager
def span(
    name: str, attributes: Mapping[str, AttributeValue] | None = None, *, kind: str = "internal"
) -> Iterator[Span | None]:
    """A span around the block, the current span's child (nothing when traces are off)."""
    tracer = _tracer
    if tracer is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    with tracer.start_as_current_span(name, kind=SpanKind[kind.upper()], attributes=attributes) as current:
        yield current


def inject(carrier: MutableMapping[str, str]) -> None:
    """The current trace context into `carrier` (W3C traceparent, unless OTEL_PROPAGATORS says otherwise)."""
    if _tracer is None:
        return
    from opentelemetry import propagate

    propagate.inject(carrier)


@contextmanager
def continued(
    name: str,
    carrier: Mapping[str, Any],
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    kind: str = "server",
) -> Iterator[Span | None]:
    """A span whose parent came from another process (an HTTP request's headers, a job's message)."""
    tracer = _tracer
    if tracer is None:
        yield None
        return
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    parent = propagate.extract(carrier)
    with tracer.start_as_current_span(
        name, context=parent, kind=SpanKind[kind.upper()], attributes=attributes
    ) as current:
        yield current


def start_continued(
    name: str,
    carrier: Mapping[str, Any],
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    kind: str = "consumer",
) -> Callable[[BaseException | None], None] | None:
    """:func:`continued` for code that starts and ends the span in separate hooks (Dramatiq's middleware):
    the span is made current now; call what this returns, in the same thread, to end it (None when off)."""
    tracer = _tracer
    if tracer is None:
        return None
    from opentelemetry import context, propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    current = tracer.start_span(
        name, context=propagate.extract(carrier), kind=SpanKind[kind.upper()], attributes=attributes
    )
    token = context.attach(trace.set_span_in_context(current))

    def end(error: BaseException | None) -> None:
        if error is not None:
            current.record_exception(error)
            current.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        context.detach(token)
        current.end()

    return end
