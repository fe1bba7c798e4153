"""Entry point: ``python -m hyperinfer.quota`` or ``hyperinfer-quota``."""

from __future__ import annotations

from hyperinfer.quota.app import create_app
from hyperinfer.quota.settings import QuotaSettings
from hyperinfer.runtime import run_service


def main() -> None:
    run_service("quota", QuotaSettings, create_app)


if __name__ == "__main__":
    main()
