"""Entry point: ``python -m hyperinfer.gpu_collector`` or ``hyperinfer-gpu-collector``."""

from __future__ import annotations

from hyperinfer.gpu_collector.app import create_app
from hyperinfer.gpu_collector.settings import GpuCollectorSettings
from hyperinfer.runtime import run_service


def main() -> None:
    run_service("gpu-collector", GpuCollectorSettings, create_app)


if __name__ == "__main__":
    main()
