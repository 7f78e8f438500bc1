"""`EMAILKIT_TEST_SHARD=K/N` runs the K-th of N shares of the selected tests (K from 0), so that N processes,
each on a database and Redis database of its own, run the suite side by side (`.ci/run` does, on two cores).

Tests are dealt out in their collection order, one to each share in turn, after every other deselection
(markers, -k): every share gets a slice of every file, so the shares take about the same time whatever the
files' sizes, and processes that collect the same tree agree on who runs what without talking to each other.
"""

from __future__ import annotations

import os

import pytest

VARIABLE = "EMAILKIT_TEST_SHARD"


def parse(value: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        raise pytest.UsageError(f"{VARIABLE}={value!r}: expected K/N, e.g. 0/2") from None
    if not 0 <= index < count:
        raise pytest.UsageError(f"{VARIABLE}={value!r}: K must be at least 0 and below N")
    return index, count


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    value = os.environ.get(VARIABLE)
    if not value:
        return
    index, count = parse(value)
    kept = [item for position, item in enumerate(items) if position % count == index]
    dropped = [item for position, item in enumerate(items) if position % count != index]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_report_header(config: pytest.Config) -> str | None:
    value = os.environ.get(VARIABLE)
    return f"{VARIABLE}={value}: this process runs that share of the selected tests" if value else None
