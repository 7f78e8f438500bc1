"""What emailkit counts, as plain calls: the port the domain, the jobs and the web layer record through.

Each call costs a dictionary look-up and an increment (a write into a memory-mapped file when the command runs
several processes). The send pipeline records once per chunk, never per message.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from time import perf_counter
from typing import Any

from emailkit.metrics import process
from emailkit.metrics.families import (
    BATCH_EVENTS,
    CAMPAIGN_STATUSES,
    EMAIL_KINDS,
    EMAIL_STATUSES,
    FLOW_RUN_STATUSES,
    GRAPHQL_ERROR_KINDS,
    GRAPHQL_OPERATION_TYPES,
    HTTP_METHODS,
    IMPORT_OUTCOMES,
    OTHER,
    POOL_STATES,
    SENDERS,
    TRACKING_KINDS,
    WEBHOOK_EVENT_TYPES,
    WEBHOOK_PROVIDERS,
    Families,
    bounded,
)

_families: Families | None = None
_lock = threading.Lock()
# Children by label values: labels() validates and converts on every call, a dict look-up does not.
_children: dict[tuple[str, ...], Any] = {}


def families() -> Families:
    """This process's families, built on first use (after the composition root chose where values live)."""
    global _families
    if _families is None:
        with _lock:
            if _families is None:
                _families = Families()
                process.on_exit_drop_live_gauges()
    return _families


def _child(family: str, *values: str) -> Any:
    key = (family, *values)
    child = _children.get(key)
    if child is None:
        child = getattr(families(), family).labels(*values)
        _children[key] = child
    return child


def emails(kind: str, sender: str, status: str, count: int = 1) -> None:
    if count:
        _child(
            "emails", bounded(kind, EMAIL_KINDS), bounded(sender, SENDERS), bounded(status, EMAIL_STATUSES)
        ).inc(count)


def send_duration(sender: str, seconds: float) -> None:
    _child("send_duration", bounded(sender, SENDERS)).observe(seconds)


def batch(event: str) -> None:
    _child("batches", bounded(event, BATCH_EVENTS)).inc()


def queue_depth(queue: str, depth: int) -> None:
    """``queue`` is a declared job queue's name (the code declares a handful)."""
    _child("queue_depth", queue).set(depth)


def campaign_status(status: str) -> None:
    _child("campaign_runs", bounded(status.lower(), CAMPAIGN_STATUSES)).inc()


def flow_runs(status: str, count: int = 1) -> None:
    if count:
        _child("flow_runs", bounded(status.lower(), FLOW_RUN_STATUSES)).inc(count)


def webhook_event(provider: str, kind: str, count: int = 1) -> None:
    if count:
        _child(
            "webhook_events", bounded(provider, WEBHOOK_PROVIDERS), bounded(kind.lower(), WEBHOOK_EVENT_TYPES)
        ).inc(count)


def webhook_signature_failure(provider: str) -> None:
    _child("webhook_rejected", bounded(provider, WEBHOOK_PROVIDERS)).inc()


def tracking_hits(kind: str, count: int) -> None:
    if count:
        _child("tracking_hits", bounded(kind, TRACKING_KINDS)).inc(count)


def hit_flush(seconds: float) -> None:
    families().hit_flush.observe(seconds)


def import_rows(outcome: str, count: int) -> None:
    if count:
        _child("import_rows", bounded(outcome, IMPORT_OUTCOMES)).inc(count)


def http_request(route: str, method: str, code: int, seconds: float) -> None:
    """``route`` is a route template (``/webhooks/{provider}``), never a path as requested."""
    _child("http_duration", route, bounded(method, HTTP_METHODS)).observe(seconds)
    if code >= 400:
        _child("http_errors", route, str(code)).inc()


def graphql_operation(operation_type: str, seconds: float) -> None:
    _child("graphql_duration", bounded(operation_type, GRAPHQL_OPERATION_TYPES)).observe(seconds)


def graphql_error(kind: str, code: str) -> None:
    """``kind``: an ``error`` of the response or a mutation's ``user_error``; ``code`` is one of the API's
    error codes (the caller bounds it)."""
    _child("graphql_errors", bounded(kind, GRAPHQL_ERROR_KINDS), code or OTHER).inc()


def pool(state: str, delta: int) -> None:
    _child("db_pool", bounded(state, POOL_STATES)).inc(delta)


@contextmanager
def timed_send(sender: str) -> Iterator[None]:
    started = perf_counter()
    try:
        yield
    finally:
        send_duration(sender, perf_counter() - started)
