"""Entry point: ``python -m hyperinfer.ingress`` or ``hyperinfer-ingress``."""

from __future__ import annotations

from hyperinfer.ingress.app import create_app
from hyperinfer.ingress.settings import IngressSettings
from hyperinfer.runtime import run_service


def main() -> None:
    run_service("ingress", IngressSettings, create_app)


if __name__ == "__main__":
    main()
