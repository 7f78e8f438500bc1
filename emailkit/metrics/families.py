"""The metric families emailkit exports, and the closed sets their label values come from.

Every label value is one of a fixed set (a value outside it is recorded as ``other``): no address, no id, no
free text, so the number of series stays the same whatever the audience, the number of campaigns or what a
client sends. Route and queue labels are bounded by the code (route templates, declared queues), not by
requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OTHER: Final = "other"

# What happened to each email handed to emailkit for sending.
EMAIL_STATUSES: Final = frozenset({"sent", "failed", "deferred", "skipped", "in_doubt"})
# Which feature sent it.
EMAIL_KINDS: Final = frozenset({"campaign", "flow", "transactional"})
# The sender's kind: the provider it goes through (a workspace's senders are counted by kind, never by address);
# "none" for what was settled before a sender was chosen (a flow's skipped and in-doubt sends).
SENDERS: Final = frozenset(
    {"none", "outbox", "smtp", "ses", "sendgrid", "mailgun", "postmark", "resend", "brevo"}
)
BATCH_EVENTS: Final = frozenset({"claimed", "taken_over", "released", "done", "lease_lost"})
CAMPAIGN_STATUSES: Final = frozenset({"scheduled", "running", "paused", "finished", "cancelled", "failed"})
FLOW_RUN_STATUSES: Final = frozenset({"active", "completed", "exited"})
WEBHOOK_PROVIDERS: Final = frozenset({"ses", "sendgrid", "mailgun", "postmark", "resend", "brevo"})
WEBHOOK_EVENT_TYPES: Final = frozenset(
    {"delivered", "bounce", "complaint", "open", "click", "unsubscribe", "dropped", "deferred", "custom"}
)
TRACKING_KINDS: Final = frozenset({"open", "click"})
IMPORT_OUTCOMES: Final = frozenset({"inserted", "updated", "skipped", "failed"})
GRAPHQL_ERROR_KINDS: Final = frozenset({"error", "user_error"})
GRAPHQL_OPERATION_TYPES: Final = frozenset({"query", "mutation", "subscription"})
HTTP_METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
POOL_STATES: Final = frozenset({"in_use", "waiting"})

# Seconds. A provider hand-over is one SMTP message group or one HTTP request: milliseconds into a local
# relay, up to seconds for a slow API.
SEND_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REQUEST_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FLUSH_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


def bounded(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else OTHER


class Families:
    """The families, registered in a registry of their own (built once per process, on first use)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        # A `_created` series per counter and histogram doubles what is stored and says little here (the
        # multiprocess mode never has them): one setting for every process alike.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry: CollectorRegistry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.emails: Counter = Counter(
            "emailkit_emails",
            "Emails by what sent them, the sender's kind and the outcome",
            ["kind", "sender", "status"],
            registry=r,
        )
        self.send_duration: Histogram = Histogram(
            "emailkit_send_duration_seconds",
            "Time of one hand-over to a provider (an SMTP message group or one HTTP request)",
            ["sender"],
            buckets=SEND_BUCKETS,
            registry=r,
        )
        self.batches: Counter = Counter(
            "emailkit_batches",
            "Campaign batches claimed, taken over from a dead worker, released, done, and lost to another worker",
            ["event"],
            registry=r,
        )
        self.queue_depth: Gauge = Gauge(
            "emailkit_queue_depth",
            "Messages waiting in each job queue (the most recent reading of any process)",
            ["queue"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.campaign_runs: Counter = Counter(
            "emailkit_campaign_runs",
            "Campaigns entering each status",
            ["status"],
            registry=r,
        )
        self.flow_runs: Counter = Counter(
            "emailkit_flow_runs",
            "Flow runs entering each status",
            ["status"],
            registry=r,
        )
        self.webhook_events: Counter = Counter(
            "emailkit_webhook_events",
            "Provider webhook events accepted, by provider and event type",
            ["provider", "type"],
            registry=r,
        )
        self.webhook_rejected: Counter = Counter(
            "emailkit_webhook_signature_failures",
            "Provider webhook requests refused for a missing or wrong signature",
            ["provider"],
            registry=r,
        )
        self.tracking_hits: Counter = Counter(
            "emailkit_tracking_hits",
            "Open pixel and click redirect hits",
            ["kind"],
            registry=r,
        )
        self.hit_flush: Histogram = Histogram(
            "emailkit_tracking_flush_duration_seconds",
            "Time to write one flush of the tracking hit buffer",
            buckets=FLUSH_BUCKETS,
            registry=r,
        )
        self.import_rows: Counter = Counter(
            "emailkit_import_rows",
            "Subscriber import rows by outcome",
            ["outcome"],
            registry=r,
        )
        self.http_duration: Histogram = Histogram(
            "emailkit_http_request_duration_seconds",
            "HTTP request time by route template and method",
            ["route", "method"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.http_errors: Counter = Counter(
            "emailkit_http_errors",
            "HTTP responses with a 4xx or 5xx status, by route template and status code",
            ["route", "code"],
            registry=r,
        )
        self.graphql_duration: Histogram = Histogram(
            "emailkit_graphql_duration_seconds",
            "GraphQL operation time over HTTP, by operation type",
            ["operation_type"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.graphql_errors: Counter = Counter(
            "emailkit_graphql_errors",
            "GraphQL errors by code: the response's errors (extensions.code) and mutations' userErrors",
            ["kind", "code"],
            registry=r,
        )
        self.db_pool: Gauge = Gauge(
            "emailkit_db_pool_connections",
            "Database pool connections in use, and checkouts waiting for one (summed over live processes)",
            ["state"],
            multiprocess_mode="livesum",
            registry=r,
        )
