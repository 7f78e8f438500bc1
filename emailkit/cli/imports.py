"""``emailkit import``: a CSV file imported here and now, the same import as the API's importSubscribers, with
a progress bar while it runs and the first rows not imported at the end.

The exit status is 0 when the import finished, 1 when it failed or another run took it over, and 2 when the
settings or the request were refused.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer

from emailkit.cli.preflight import migrate_if_needed, settings_or_exit
from emailkit.db.tables.tenancy import DEFAULT_WORKSPACE_SLUG
from emailkit.settings import Settings

if TYPE_CHECKING:
    from rich.progress import Progress

    from emailkit.db.engine import Database
    from emailkit.db.tables.audience import Import, ImportRowError
    from emailkit.domain.audience.imports.progress import ImportState


class ImportModeOption(StrEnum):
    upsert = "upsert"
    skip_existing = "skip-existing"


class ImportStatusOption(StrEnum):
    confirmed = "confirmed"
    unconfirmed = "unconfirmed"
    unsubscribed = "unsubscribed"


@dataclass(frozen=True)
class _Choices:
    """What the command line asks of the import."""

    list_names: list[str]
    mode: ImportModeOption
    status: ImportStatusOption | None
    column_map: object
    # A workspace's slug or id.
    workspace: str
    trigger_flows: bool = True


def import_cmd(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The CSV file.")],
    list_names: Annotated[
        list[str] | None, typer.Option("--list", help="Subscribe to this list (by name; repeatable).")
    ] = None,
    mode: Annotated[ImportModeOption, typer.Option(help="What to do with existing subscribers.")] = (
        ImportModeOption.upsert
    ),
    status: Annotated[
        ImportStatusOption | None,
        typer.Option(help="Subscription status [default: by the list's opt-in].", show_default=False),
    ] = None,
    column_map: Annotated[
        str | None, typer.Option("--map", help='Column map as JSON, e.g. \'{"E-Mail": "email"}\'.')
    ] = None,
    errors_shown: Annotated[
        int, typer.Option("--errors", min=0, max=1000, help="Rows of the report to print.")
    ] = 20,
    workspace: Annotated[
        str, typer.Option(help="The slug (or id) of the workspace to import into.")
    ] = DEFAULT_WORKSPACE_SLUG,
    trigger_flows: Annotated[
        bool,
        typer.Option(
            "--trigger-flows/--no-trigger-flows",
            help="Whether the people subscribed enter the lists' SUBSCRIBED flows.",
        ),
    ] = True,
) -> None:
    """Import subscribers from a CSV file, here and now (the same import as the API's importSubscribers)."""
    from emailkit.db.tables.audience import ImportStatus
    from emailkit.domain.errors import DomainError

    settings = settings_or_exit()
    try:
        mapping = json.loads(column_map) if column_map else None
    except json.JSONDecodeError as exc:
        typer.echo(f"error: --map is not valid JSON ({exc})", err=True)
        raise typer.Exit(2) from None
    choices = _Choices(list_names or [], mode, status, mapping, workspace, trigger_flows)
    size = file.stat().st_size
    try:
        result, report = asyncio.run(_import(settings, file, size, choices, errors_shown))
    except DomainError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if result is None:
        typer.echo("error: the import was taken over by another run", err=True)
        raise typer.Exit(1)
    _print_outcome(result, report)
    raise typer.Exit(0 if result.status is ImportStatus.FINISHED else 1)


async def _import(
    settings: Settings, file: Path, size: int, choices: _Choices, errors_shown: int
) -> tuple[Import | None, list[ImportRowError]]:
    """Create the import, run it with a progress bar, and read the first `errors_shown` rows of its report."""
    from emailkit.db.engine import Database
    from emailkit.db.scope import workspace_scope
    from emailkit.domain.audience.imports import service as imports
    from emailkit.domain.throttle import CoalescingPublisher
    from emailkit.tasks.pubsub import build_pubsub

    await migrate_if_needed(settings, migrate=False)
    db = Database(settings.database_url)
    pubsub = build_pubsub(settings)
    publisher = CoalescingPublisher(pubsub)
    try:
        with workspace_scope(await _workspace_id(db, choices.workspace)):
            with file.open("rb") as source:
                import_id = await _create_import(db, file.name, source, size, choices)
                with _progress_bar() as show:
                    result = await imports.run_import(
                        db, import_id, publisher=publisher, source=source, on_progress=show
                    )
            async with db.session() as session:
                report = await imports.import_errors(session, import_id, errors_shown)
        return result, report
    finally:
        await publisher.aclose()
        await pubsub.close()
        await db.dispose()


async def _workspace_id(db: Database, reference: str) -> int:
    """The id of the workspace named on the command line; unknown or archived ones are refused."""
    from emailkit.db.tables.tenancy import WorkspaceStatus
    from emailkit.domain.errors import DomainError, ErrorCode
    from emailkit.domain.workspaces import workspace_by_reference

    async with db.read_session() as session:
        found = await workspace_by_reference(session, reference)
    if found is None or found.status is not WorkspaceStatus.ACTIVE:
        raise DomainError.single(
            ErrorCode.WORKSPACE_NOT_FOUND, f"No active workspace {reference!r}", "workspace"
        )
    return found.id


async def _create_import(db: Database, name: str, source: IO[bytes], size: int, choices: _Choices) -> int:
    """The import's row, checked against the file's first bytes (its header); `source` is left at the start."""
    from emailkit.db.tables.audience import ImportMode, SubscriptionStatus
    from emailkit.domain.audience.imports import csvfile as imports_csv
    from emailkit.domain.audience.imports import service as imports

    sample = source.read(imports_csv.SAMPLE_BYTES)
    source.seek(0)
    async with db.transaction() as session:
        request = imports.ImportRequest(
            source_name=name,
            list_ids=await imports.list_ids_by_name(session, choices.list_names),
            mode=ImportMode.SKIP_EXISTING
            if choices.mode is ImportModeOption.skip_existing
            else ImportMode.UPSERT,
            subscription_status=SubscriptionStatus(choices.status.upper()) if choices.status else None,
            column_map=choices.column_map,
            trigger_flows=choices.trigger_flows,
        )
        row = await imports.create_local_import(session, request, sample, size)
    return row.id


class _ProgressShown:
    """The import's progress on the bar: rows read while the file is parsed, then rows loaded."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.task = bar.add_task("Reading", total=None)

    async def __call__(self, state: ImportState) -> None:
        if state.phase == "loading" or state.final:
            done = state.inserted + state.updated + state.skipped + state.failed
            self.bar.update(self.task, description="Loading", total=state.total, completed=done)
        else:
            self.bar.update(
                self.task, description="Reading", total=state.total or None, completed=state.processed
            )


@contextmanager
def _progress_bar() -> Iterator[_ProgressShown]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        yield _ProgressShown(bar)


def _print_outcome(result: Import, report: list[ImportRowError]) -> None:
    encoding, delimiter = result.options.get("encoding"), result.options.get("delimiter")
    detected = f" ({encoding}, delimiter {delimiter!r})" if encoding else ""
    typer.echo(
        f"Import {result.id} {result.status.value}{detected}: {result.total} rows, {result.inserted} inserted, "
        f"{result.updated} updated, {result.skipped} skipped, {result.failed} failed"
    )
    if result.error:
        typer.echo(f"error: {result.error}", err=True)
    if report:
        more = result.failed + result.skipped - len(report)
        typer.echo("Rows not imported:" if more <= 0 else f"First {len(report)} rows not imported:")
        for entry in report:
            typer.echo(f"  row {entry.row}: {entry.message}")
