"""Entry point: ``python -m hyperinfer.config`` or ``hyperinfer-config``."""

from __future__ import annotations

from hyperinfer.config.app import create_app
from hyperinfer.config.settings import ConfigSettings
from hyperinfer.runtime import run_service


def main() -> None:
    run_service("config", ConfigSettings, create_app)


if __name__ == "__main__":
    main()
