"""What a job carries besides its arguments: the log context and the trace it belongs to.

The trace context travels in the message's options (``trace_context``: W3C ``traceparent``), injected when the
message is enqueued, wherever that happens (an API process, a worker re-enqueueing a batch, a retry), and
continued by the worker that processes it, in another process or on another host.

The log context is bound in the worker thread before the job runs: Dramatiq hands an async job to its event
loop from that thread, and the job's task starts with a copy of the thread's context, so every line the job
logs names it. Its ids (``batch_id=7``) are bound by their names without ``_id`` (``batch=7``).
"""

from __future__ import annotations

from typing import Any

import dramatiq
import structlog
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware

from emailkit import traces

OPTION = "trace_context"


def _log_fields(message: MessageProxy) -> dict[str, Any]:
    fields: dict[str, Any] = {"job": message.actor_name, "message_id": message.message_id}
    for key, value in message.kwargs.items():
        if key.endswith("_id") and isinstance(value, int | str):
            fields[key.removesuffix("_id")] = value
    return fields


class JobContext(Middleware):
    """Binds a job's log context and continues its trace around its run."""

    def __init__(self) -> None:
        self._ends: dict[str, Any] = {}

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int) -> None:
        if not traces.active():
            return
        carrier: dict[str, str] = {}
        traces.inject(carrier)
        # Empty outside any span (a retry re-enqueued by Dramatiq after the job's span ended): the message
        # keeps the context it came with.
        if carrier:
            message.options[OPTION] = carrier

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**_log_fields(message))
        end = traces.start_continued(
            f"job {message.actor_name}",
            message.options.get(OPTION) or {},
            {
                "messaging.system": "dramatiq",
                "messaging.destination.name": message.queue_name,
                "messaging.message.id": message.message_id,
                "emailkit.job": message.actor_name,
            },
        )
        if end is not None:
            self._ends[message.message_id] = end

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        end = self._ends.pop(message.message_id, None)
        if end is not None:
            end(exception)
        structlog.contextvars.clear_contextvars()

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self.after_process_message(broker, message)
