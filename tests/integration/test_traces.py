"""OpenTelemetry traces, recorded by the SDK's in-memory exporter.

One ``startCampaign`` is one trace: the HTTP request, the GraphQL operation, and through the job's message
(its trace context travels in the message options, and the job's span continues it as a remote parent) each
batch's job in the worker, down to the provider's requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from emailkit import traces
from tests.e2e.embedded import embedded_app
from tests.e2e.test_embedded_sending import STATUS, setup_campaign, wait_until

BATCHES = 3


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traces.use(provider)
    yield exporter
    traces.use(None)
    provider.shutdown()


def _chain(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    """`span` and its ancestors, nearest first."""
    chain = [span]
    while chain[-1].parent is not None and chain[-1].parent.span_id in by_id:
        chain.append(by_id[chain[-1].parent.span_id])
    return chain


def test_start_campaign_is_one_trace_down_to_the_provider(
    tmp_path: Path, exported: InMemorySpanExporter
) -> None:
    with embedded_app(tmp_path, public_url="https://mail.example.com", batch_size=10) as api:
        campaign_id = setup_campaign(api, 25)
        exported.clear()
        resp = api.client.post(
            "/graphql",
            json={
                "query": "mutation Launch($i: CampaignIdInput!) { startCampaign(input: $i) { userErrors { code } } }",
                "variables": {"i": {"id": campaign_id}},
                "operationName": "Launch",
            },
            headers={"Authorization": f"Bearer {api.key}"},
        )
        assert resp.json()["data"]["startCampaign"]["userErrors"] == []
        wait_until(lambda: api(STATUS, {"id": campaign_id})["campaign"]["status"] == "FINISHED")
        # A job's span ends once the job has returned, after the campaign shows FINISHED.
        wait_until(
            lambda: sum(s.name == "job send_campaign_batch" for s in exported.get_finished_spans()) == BATCHES
        )
    spans = exported.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    [operation] = [s for s in spans if s.name == "mutation Launch"]
    assert operation.attributes is not None and operation.attributes["graphql.operation.name"] == "Launch"
    [request] = [
        s for s in spans if s.name == "POST /graphql" and s.context.trace_id == operation.context.trace_id
    ]
    assert operation.parent is not None and operation.parent.span_id == request.context.span_id
    assert request.kind is SpanKind.SERVER and request.attributes["http.response.status_code"] == 200

    sends = [s for s in spans if s.name == "send outbox"]
    assert sum(s.attributes["emailkit.messages"] for s in sends) == 25
    for send in sends:
        assert send.kind is SpanKind.CLIENT
        chain = _chain(send, by_id)
        names = [s.name for s in chain]
        assert names == ["send outbox", "job send_campaign_batch", "mutation Launch", "POST /graphql"], names
        job = chain[1]
        # The job's parent came out of its message, not out of this thread's context.
        assert job.parent is not None and job.parent.is_remote
        assert job.kind is SpanKind.CONSUMER and job.attributes["messaging.system"] == "dramatiq"
        assert {s.context.trace_id for s in chain} == {operation.context.trace_id}


def test_a_webhook_has_its_span(tmp_path: Path, exported: InMemorySpanExporter) -> None:
    with embedded_app(tmp_path) as api:
        refused = api.client.post("/webhooks/sendgrid", content=b"[]")
    [webhook] = [s for s in exported.get_finished_spans() if s.name == "webhook sendgrid"]
    assert webhook.attributes["http.response.status_code"] == refused.status_code >= 400
    [request] = [s for s in exported.get_finished_spans() if s.name == "POST /webhooks/{provider}"]
    assert webhook.parent is not None and webhook.parent.span_id == request.context.span_id


def test_no_spans_and_no_trace_context_when_off(tmp_path: Path) -> None:
    assert not traces.active()
    with traces.span("anything") as span:
        assert span is None
    carrier: dict[str, str] = {}
    traces.inject(carrier)
    assert carrier == {}
    assert not traces.wanted({})
    assert not traces.wanted({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"})
    assert not traces.wanted({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"})
    assert traces.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert traces.wanted({"OTEL_TRACES_EXPORTER": "console"})
