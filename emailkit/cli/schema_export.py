"""``emailkit export-schema``: the GraphQL schema (SDL) the code defines, as committed in schema.graphql."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer


def export_schema(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default stdout).")
    ] = None,
) -> None:
    """Print the GraphQL schema (SDL)."""
    from emailkit.schema import build_schema

    sdl = build_schema().as_str() + "\n"
    if output is None:
        sys.stdout.write(sdl)
    else:
        output.write_text(sdl)
