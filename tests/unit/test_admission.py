"""The admission gate of /graphql: a fixed number of requests execute, the next ones wait in arrival order
within a deadline, and a request that would wait longer is refused at once (no I/O: a stub ASGI app)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from emailkit.web.admission import SHED_PACE, SHED_RETRY_AFTER, AdmissionControl, AdmissionGate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def settle() -> None:
    """Let every task that can run, run (no timing: a few passes of the event loop)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_free_slots_admit_at_once_and_the_rest_wait_in_arrival_order() -> None:
    gate = AdmissionGate(2, max_wait=60)
    first, second = await gate.acquire(), await gate.acquire()
    assert first is not None and second is not None and gate.running == 2
    order: list[str] = []

    async def wait(name: str) -> float | None:
        admitted = await gate.acquire()
        order.append(name)
        return admitted

    waiting = [asyncio.create_task(wait(name)) for name in ("a", "b", "c")]
    await settle()
    assert gate.waiting == 3 and order == []

    gate.release(first)
    await settle()
    assert order == ["a"] and gate.running == 2 and gate.waiting == 2
    gate.release(second)
    await settle()
    assert order == ["a", "b"]
    # A newcomer does not overtake the one already waiting.
    late = asyncio.create_task(wait("late"))
    await settle()
    assert gate.waiting == 2
    for task in waiting[:2]:
        admitted = task.result()
        assert admitted is not None
        gate.release(admitted)
        await settle()
    assert order == ["a", "b", "c", "late"]
    for task in (waiting[2], late):
        admitted = task.result()
        assert admitted is not None
        gate.release(admitted)
    assert gate.running == 0 and gate.waiting == 0


async def test_a_request_expected_to_take_longer_than_the_deadline_is_refused_without_waiting() -> None:
    clock = Clock()
    gate = AdmissionGate(2, max_wait=1.5, clock=clock)
    # Requests have been holding a slot 0.5 s each: two slots answer 4 a second.
    for _ in range(2):
        admitted = await gate.acquire()
        assert admitted is not None
        clock.now += 0.5
        gate.release(admitted)
    holders = [await gate.acquire(), await gate.acquire()]
    assert all(h is not None for h in holders)
    queued = [asyncio.create_task(gate.acquire()) for _ in range(3)]
    await settle()
    # Three waiting: a fourth would wait (3 + 1) x 0.5 / 2 = 1 s, then execute 0.5 s: within the deadline;
    # a fifth would take 1.25 + 0.5 s.
    assert gate.waiting == 3 and gate.expected_time() == pytest.approx(1.5)
    assert not gate.would_shed()
    fourth = asyncio.create_task(gate.acquire())
    await settle()
    assert gate.waiting == 4 and gate.would_shed()
    assert await gate.acquire() is None
    assert gate.shed == 1 and gate.waiting == 4
    for task in [*queued, fourth]:
        task.cancel()
    await asyncio.gather(*queued, fourth, return_exceptions=True)
    assert gate.waiting == 0 and gate.running == 2


async def test_a_waiter_is_refused_when_the_deadline_passes_and_leaves_no_trace() -> None:
    gate = AdmissionGate(1, max_wait=0.05)
    holder = await gate.acquire()
    assert holder is not None
    # Nothing is released: the waiter's deadline passes.
    assert await gate.acquire() is None
    assert gate.waiting == 0 and gate.shed == 1
    gate.release(holder)
    assert gate.running == 0
    assert await gate.acquire() is not None


async def test_when_no_slot_came_free_for_a_deadline_newcomers_are_refused_at_once() -> None:
    clock = Clock()
    gate = AdmissionGate(1, max_wait=1.0, clock=clock)
    holder = await gate.acquire()
    assert holder is not None
    assert not gate.would_shed()  # a newcomer would wait: the holder may finish any moment
    clock.now += 1.5  # the holder hangs (a lock, a stuck statement)
    assert gate.would_shed()
    assert await gate.acquire() is None
    gate.release(holder)
    assert not gate.would_shed()


async def test_the_queue_is_bounded_whatever_the_estimate() -> None:
    gate = AdmissionGate(1, max_wait=60, max_queue=2)
    holder = await gate.acquire()
    assert holder is not None
    queued = [asyncio.create_task(gate.acquire()) for _ in range(2)]
    await settle()
    assert gate.would_shed() and await gate.acquire() is None
    for task in queued:
        task.cancel()
    await asyncio.gather(*queued, return_exceptions=True)


async def test_a_waiter_cancelled_as_its_slot_arrives_passes_the_slot_on() -> None:
    gate = AdmissionGate(1, max_wait=60)
    holder = await gate.acquire()
    assert holder is not None
    first = asyncio.create_task(gate.acquire())
    second = asyncio.create_task(gate.acquire())
    await settle()
    gate.release(holder)  # handed to `first`, which is cancelled before it runs
    first.cancel()
    await settle()
    assert first.cancelled()
    admitted = second.result()
    assert admitted is not None and gate.running == 1 and gate.waiting == 0
    gate.release(admitted)
    assert gate.running == 0


# -- the ASGI wrapper -------------------------------------------------------------------------------------


class BlockingApp:
    """Answers 200 with the body it read, once `go` is set; counts requests that started executing."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.started = 0
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.started += 1
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        await self.go.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def http_scope(content_type: bytes = b"application/json") -> Scope:
    return {
        "type": "http",
        "method": "POST",
        "path": "/graphql",
        "headers": [(b"content-type", content_type)],
    }


async def call(
    app: Any, scope: Scope, chunks: list[bytes], gone: asyncio.Event | None = None
) -> list[Message]:
    """Run one request; after its body the client stays connected until `gone` is set."""
    sent: list[Message] = []
    pending = list(chunks)

    async def receive() -> Message:
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
        await (gone or asyncio.Event()).wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def status(sent: list[Message]) -> int:
    return int(sent[0]["status"])


async def test_excess_requests_get_503_with_retry_after_and_admitted_ones_their_answer() -> None:
    inner = BlockingApp()
    app = AdmissionControl(inner, AdmissionGate(2, max_wait=0.05), pace=0)
    holders = [asyncio.create_task(call(app, http_scope(), [b'{"query":', b' "{ a }"}'])) for _ in range(2)]
    await settle()
    assert inner.started == 2

    refused = await asyncio.gather(*(call(app, http_scope(), [b"{}"]) for _ in range(3)))
    assert inner.started == 2
    for sent in refused:
        assert status(sent) == 503
        headers = dict(sent[0]["headers"])
        assert headers[b"retry-after"] == str(SHED_RETRY_AFTER).encode()
        body = json.loads(sent[1]["body"])
        assert [e["extensions"]["code"] for e in body["errors"]] == ["SERVICE_UNAVAILABLE"]

    inner.go.set()
    answered = await asyncio.gather(*holders)
    # The body was read in two parts before admission and handed to the app whole.
    assert [status(s) for s in answered] == [200, 200]
    assert inner.bodies == [b'{"query": "{ a }"}'] * 2


async def test_the_slot_is_free_once_the_response_starts() -> None:
    gate = AdmissionGate(1, max_wait=60)
    seen: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        seen.append(gate.running)  # a slow reader of the body no longer holds the slot
        await send({"type": "http.response.body", "body": b"ok"})

    assert status(await call(AdmissionControl(app, gate), http_scope(), [b"{}"])) == 200
    assert seen == [0] and gate.running == 0


async def test_a_failing_request_gives_its_slot_back() -> None:
    gate = AdmissionGate(1, max_wait=60)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await call(AdmissionControl(app, gate), http_scope(), [b"{}"])
    assert gate.running == 0


async def test_websockets_and_uploads_are_not_gated() -> None:
    gate = AdmissionGate(1, max_wait=0.01)
    holder = await gate.acquire()  # the gate is full
    assert holder is not None
    reached: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["type"])
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    control = AdmissionControl(app, gate, pace=0)
    await control({"type": "websocket", "path": "/graphql", "headers": []}, None, None)  # type: ignore[arg-type]
    upload = await call(control, http_scope(b"multipart/form-data; boundary=x"), [b"--x--"])
    assert reached == ["websocket", "http"] and status(upload) == 200
    assert status(await call(control, http_scope(), [b"{}"])) == 503


async def test_a_refusal_is_answered_after_a_pause_so_a_client_in_a_loop_cannot_flood_the_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    gate = AdmissionGate(1, max_wait=1.0, clock=clock)
    holder = await gate.acquire()
    assert holder is not None
    clock.now += 2  # nothing has come free for two deadlines: refused at arrival
    pauses: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float) -> None:
        pauses.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)
    control = AdmissionControl(BlockingApp(), gate)
    assert status(await call(control, http_scope(), [b"{}"])) == 503
    (pause,) = [p for p in pauses if p > 0]
    assert 0 < pause <= SHED_PACE


async def test_a_client_that_leaves_while_queued_gives_up_its_place() -> None:
    inner = BlockingApp()
    gate = AdmissionGate(1, max_wait=60)
    app = AdmissionControl(inner, gate, pace=0)
    holder = asyncio.create_task(call(app, http_scope(), [b"{}"]))
    await settle()
    gone = [asyncio.Event() for _ in range(2)]
    queued = [asyncio.create_task(call(app, http_scope(), [b"{}"], left)) for left in gone]
    await settle()
    assert gate.waiting == 2 and inner.started == 1

    gone[0].set()  # the first in the queue disconnects (a client time-out, a closed tab)
    assert await queued[0] == []  # nothing is sent to a client that is gone
    assert gate.waiting == 1

    inner.go.set()
    assert status(await holder) == 200
    # The slot went to the one still waiting; the one that left never executed.
    assert status(await queued[1]) == 200
    assert inner.started == 2 and gate.running == 0 and gate.waiting == 0


async def test_a_client_that_leaves_as_its_turn_comes_passes_the_slot_on() -> None:
    inner = BlockingApp()
    inner.go.set()
    gate = AdmissionGate(1, max_wait=60)
    app = AdmissionControl(inner, gate, pace=0)
    holder = await gate.acquire()
    assert holder is not None
    gone = asyncio.Event()
    leaving = asyncio.create_task(call(app, http_scope(), [b"{}"], gone))
    staying = asyncio.create_task(call(app, http_scope(), [b"{}"]))
    await settle()
    assert gate.waiting == 2
    gate.release(holder)  # handed to the first waiter...
    gone.set()  # ...whose client disconnects before it runs
    assert await leaving == []
    assert status(await staying) == 200
    assert inner.started == 1 and gate.running == 0 and gate.waiting == 0
