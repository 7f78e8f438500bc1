"""`emailkit worker` processes run their jobs on uvloop."""

from __future__ import annotations

import asyncio

from emailkit.tasks.worker import use_uvloop


def test_loops_created_after_use_uvloop_are_uvloop_loops() -> None:
    previous = asyncio.get_event_loop_policy()
    try:
        assert use_uvloop() is True
        # What Dramatiq's AsyncIO middleware does when the worker boots.
        loop = asyncio.new_event_loop()
        try:
            assert type(loop).__module__.startswith("uvloop")
            assert loop.run_until_complete(asyncio.sleep(0, result="ran")) == "ran"
        finally:
            loop.close()
    finally:
        asyncio.set_event_loop_policy(previous)
