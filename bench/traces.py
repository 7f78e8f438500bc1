"""What a trace span costs, off and on, against what one message costs to send.

Prints figures (not a test). A span is taken per provider request (`send_batch`, up to a few hundred messages)
and per job; this says what one span per message would add instead.

    python bench/traces.py [--spans 50000]

Measured in CPU time of this process (time.process_time), so a busy machine slows it less than wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from emailkit import traces


class Discard(SpanExporter):
    """Exports nowhere: the cost measured is emailkit's and the SDK's, not a collector's."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def per_span_us(n: int) -> float:
    attributes: dict[str, traces.AttributeValue] = {"emailkit.provider": "smtp", "emailkit.messages": 1}
    start = time.process_time()
    for _ in range(n):
        with traces.span("send smtp", attributes, kind="client"):
            pass
    return (time.process_time() - start) / n * 1e6


async def per_async_span_us(n: int) -> float:
    # As the send path takes it: inside a coroutine, around an await.
    async def send() -> None:
        await asyncio.sleep(0)

    start = time.process_time()
    for _ in range(n):
        with traces.span("send smtp", {"emailkit.messages": 1}, kind="client"):
            await send()
    with_span = time.process_time() - start
    start = time.process_time()
    for _ in range(n):
        await send()
    return (with_span - (time.process_time() - start)) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=50_000)
    n = parser.parse_args().spans
    off = per_span_us(n)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=n + 1))
    traces.use(provider)
    on = per_span_us(n)
    on_async = asyncio.run(per_async_span_us(n))
    traces.use(None)
    provider.shutdown()
    print(f"span, tracing off (no OTEL_* variable):  {off:6.2f} µs CPU")
    print(f"span, tracing on (SDK, batch processor): {on:6.2f} µs CPU")
    print(f"span around an await, tracing on:        {on_async:6.2f} µs CPU")


if __name__ == "__main__":
    main()
