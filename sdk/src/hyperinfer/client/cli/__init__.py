"""The ``hyperinfer`` command line: admin, usage and dead-letter commands.

Each command group lives in its own module and registers itself here: ``admin``
(config service: teams, keys, aliases, quotas, backends, config), ``usage``
(telemetry spend API), ``dlq`` (event pipeline). Expected failures (service down,
refused request) print one ``error:`` line and exit 1.
"""

from __future__ import annotations

import sys

import typer
from hyperinfer.client.cli import admin, dlq, usage
from hyperinfer.client.cli._http import CliError

app = typer.Typer(
    help="HyperInfer admin CLI",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
admin.register(app)
usage.register(app)
dlq.register(app)


@app.callback()
def root() -> None:
    """HyperInfer admin CLI: URLs and keys come from HYPERINFER_* environment variables."""


@app.command()
def version() -> None:
    """Print the client version."""
    typer.echo("hyperinfer 0.1.0")


def main() -> None:
    try:
        app()  # usage errors: typer prints them and exits 2
    except CliError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(1)
