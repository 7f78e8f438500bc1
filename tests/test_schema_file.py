"""The committed schema.graphql is exactly what `emailkit export-schema` produces from the code."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from emailkit.schema import build_schema

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schema.graphql"
FIX = "run `emailkit export-schema -o schema.graphql` and commit the result"


def test_committed_schema_matches_the_code() -> None:
    if not SCHEMA_FILE.exists():
        pytest.fail(f"{SCHEMA_FILE.name} is missing: {FIX}", pytrace=False)
    committed = SCHEMA_FILE.read_text(encoding="utf-8")
    current = build_schema().as_str() + "\n"
    if committed != current:
        diff = difflib.unified_diff(
            committed.splitlines(),
            current.splitlines(),
            "schema.graphql (committed)",
            "build_schema() (code)",
            lineterm="",
        )
        shown = "\n".join(list(diff)[:80])
        pytest.fail(f"schema.graphql differs from the code's schema; {FIX}.\n{shown}", pytrace=False)
