"""Entry point: ``python -m hyperinfer.event_pipeline`` or ``hyperinfer-event-pipeline``."""

from __future__ import annotations

from hyperinfer.event_pipeline.app import create_app
from hyperinfer.event_pipeline.settings import EventPipelineSettings
from hyperinfer.runtime import run_service


def main() -> None:
    run_service("event-pipeline", EventPipelineSettings, create_app)


if __name__ == "__main__":
    main()
