"""The ``hyperinfer`` command line."""

from __future__ import annotations

import typer

app = typer.Typer(help="HyperInfer admin CLI", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the client version."""
    typer.echo("hyperinfer 0.1.0")


def main() -> None:
    app()
