"""`hyperinfer` commands of this area; its owner adds them to ``register``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's command groups to the root app."""
