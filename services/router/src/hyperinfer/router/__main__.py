"""Entry point: ``python -m hyperinfer.router`` or ``hyperinfer-router``."""

from __future__ import annotations

from hyperinfer.router.app import create_app
from hyperinfer.router.settings import RouterSettings
from hyperinfer.runtime import run_service


def main() -> None:
    run_service("router", RouterSettings, create_app)


if __name__ == "__main__":
    main()
