"""`emailkit` command line: the composition root for every process kind.

The command group and its options live here; the commands, one module per family:

* ``processes``: ``serve`` (the API, and in embedded mode the worker), ``worker``, ``migrate``.
* ``api_keys``: ``create-api-key``.
* ``schema_export``: ``export-schema``.
* ``imports``: ``import`` (a CSV file, here and now).
* ``bounces``: ``bounce-server`` (the SMTP receiver of the bounce domain), ``bounce-mailbox`` (the IMAP reader).
* ``preflight``: what the commands check before they start (settings, provider, database schema).

Each command imports what it runs only when it runs, so ``--help`` stays quick.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperOption

from emailkit.cli import api_keys, bounces, imports, processes, schema_export

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Self-hosted email marketing backend.")

_option_type = TyperOption.display_type_rich


def _flag_without_type(self: TyperOption, ctx: Any) -> str | None:
    # Typer's rich help labels every flag (--help, --migrate) with a "<bool>" value it never takes.
    return None if self.is_flag else _option_type(self, ctx)


TyperOption.display_type_rich = _flag_without_type  # type: ignore[method-assign]


def _print_version(value: bool) -> None:
    if value:
        from emailkit.startup import version

        typer.echo(f"emailkit {version()}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Self-hosted email marketing backend."""


# In this order in `emailkit --help`.
app.command()(processes.serve)
app.command()(processes.worker)
app.command("bounce-server")(bounces.bounce_server)
app.command("bounce-mailbox")(bounces.bounce_mailbox)
app.command("migrate")(processes.migrate_cmd)
app.command("create-api-key")(api_keys.create_api_key)
app.command("export-schema")(schema_export.export_schema)
app.command("import")(imports.import_cmd)


def main() -> None:
    app()
