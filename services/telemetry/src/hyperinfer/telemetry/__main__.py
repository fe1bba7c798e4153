"""Entry point: ``python -m hyperinfer.telemetry`` or ``hyperinfer-telemetry``."""

from __future__ import annotations

from hyperinfer.runtime import run_service
from hyperinfer.telemetry.app import create_app
from hyperinfer.telemetry.settings import TelemetrySettings


def main() -> None:
    run_service("telemetry", TelemetrySettings, create_app)


if __name__ == "__main__":
    main()
