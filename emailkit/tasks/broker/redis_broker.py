"""The Redis broker, with a dead worker's unacknowledged messages requeued within about one heartbeat."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis


class HeartbeatRedisBroker(RedisBroker):
    """Redis broker that requeues a dead worker's unacknowledged messages within about one heartbeat.

    Dramatiq moves those messages back ("maintenance") on a random 0.1% of broker commands, which on a
    quiet deployment can take many minutes after a worker was killed. Here every queue gets that
    maintenance at least every `maintenance_interval_ms`, so recovery takes heartbeat timeout + interval.
    """

    def __init__(self, *, maintenance_interval_ms: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self.maintenance_interval_ms = maintenance_interval_ms
        self._maintained: dict[str, int] = {}
        self._maintenance_lock = threading.Lock()

    def _maintenance_due(self, command: str, queue_name: str) -> int:
        if command in ("ack", "nack"):
            return 0
        now = current_millis()
        with self._maintenance_lock:
            if now - self._maintained.get(queue_name, 0) < self.maintenance_interval_ms:
                return 0
            self._maintained[queue_name] = now
        return 1

    def _dispatch(self, command: str) -> Callable[..., Any]:
        script = self.scripts["dispatch"]
        keys = [self.namespace]

        def do_dispatch(queue_name: str, *args: Any) -> Any:
            # Same arguments as RedisBroker._dispatch; only the maintenance flag is decided differently.
            return script(
                args=[
                    command,
                    current_millis(),
                    queue_name,
                    self.broker_id,
                    self.heartbeat_timeout,
                    self.dead_message_ttl,
                    self._maintenance_due(command, queue_name),
                    self._max_unpack_size(),  # type: ignore[no-untyped-call]
                    *args,
                ],
                keys=keys,
            )

        return do_dispatch
