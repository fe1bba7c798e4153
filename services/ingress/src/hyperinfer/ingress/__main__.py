"""Entry point: ``python -m hyperinfer.ingress`` or ``hyperinfer-ingress``."""

from __future__ import annotations

import asyncio
import os

from hyperinfer.ingress.app import create_app
from hyperinfer.ingress.settings import IngressSettings
from hyperinfer.runtime import run_service

EVENT_LOOP_ENV = "HYPERINFER_INGRESS_EVENT_LOOP"


def install_event_loop(name: str) -> str:
    """Run on uvloop unless told ``asyncio`` (or uvloop is missing): the data plane's
    per-request cost falls by roughly a quarter (``bench/RESULTS.md``)."""
    if name == "asyncio":
        return name
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def main() -> None:
    install_event_loop(os.environ.get(EVENT_LOOP_ENV, "uvloop"))
    run_service("ingress", IngressSettings, create_app)


if __name__ == "__main__":
    main()
