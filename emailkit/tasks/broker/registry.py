"""Job declaration: the ``@job`` decorator and the registry of the jobs it recorded, by name.

Recording touches no broker; :func:`~emailkit.tasks.broker.factory.configure_broker` declares the recorded
jobs on the broker it builds.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Concatenate, TypeVar

from emailkit import tasks
from emailkit.domain.runtime import Runtime

DEFAULT_QUEUE = "default"

JobFunction = Callable[Concatenate[Runtime, ...], Awaitable[None]]
F = TypeVar("F", bound=JobFunction)

_QUEUE_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9._-]*")


@dataclass(frozen=True)
class JobSpec:
    name: str
    fn: JobFunction
    queue: str
    priority: int
    options: Mapping[str, Any] = field(default_factory=dict)


_JOBS: dict[str, JobSpec] = {}


def job(
    name: str | None = None, *, queue: str = DEFAULT_QUEUE, priority: int = 0, **options: Any
) -> Callable[[F], F]:
    """Record an async function as a job; `options` are Dramatiq actor options (max_retries, ...)."""
    if not _QUEUE_NAME.fullmatch(queue):
        raise ValueError(f"invalid queue name {queue!r}")

    def record(fn: F) -> F:
        is_async = inspect.iscoroutinefunction(fn)
        if not is_async:
            raise TypeError(f"job {fn.__qualname__} must be an async function")
        spec = JobSpec(name or fn.__name__, fn, queue, priority, dict(options))
        known = _JOBS.get(spec.name)
        if known is not None and (known.fn.__module__, known.fn.__qualname__) != (
            fn.__module__,
            fn.__qualname__,
        ):
            raise ValueError(f"job name {spec.name!r} is already used by {known.fn.__qualname__}")
        _JOBS[spec.name] = spec
        return fn

    return record


def registered_jobs() -> list[JobSpec]:
    for module in tasks.JOB_MODULES:
        importlib.import_module(module)
    return list(_JOBS.values())


def job_modules() -> list[str]:
    """The modules that declared the jobs, for processes that must declare the same ones."""
    return sorted({spec.fn.__module__ for spec in registered_jobs()})
