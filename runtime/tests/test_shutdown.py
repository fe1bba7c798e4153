"""SIGTERM: stop accepting, let in-flight HTTP work finish within the grace period, exit 0."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from hyperinfer.runtime.testing.servers import free_port

pytestmark = pytest.mark.slow


def start_sample(start_service: Callable[..., Any], grace_s: float, **env: Any) -> Any:
    port = free_port()
    svc = start_service(
        "sample",
        port,
        HYPERINFER_SAMPLE_HTTP_PORT=port,
        HYPERINFER_SAMPLE_DEPS="",
        HYPERINFER_SHUTDOWN_GRACE_S=grace_s,
        **env,
    )
    svc.wait_status("/health", 200)
    return svc


def request_in_background(url: str) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["response"] = httpx.get(url, timeout=60)
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread, outcome


def wait_for_log(svc: Any, message: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while message not in svc.stderr():
        assert time.monotonic() < deadline, f"no log {message!r}: {svc.stderr()[-1000:]}"
        time.sleep(0.05)


def log_messages(svc: Any) -> list[str]:
    return [orjson.loads(line)["msg"] for line in svc.stderr().splitlines()]


def refuses_connections(svc: Any) -> bool:
    try:
        svc.get("/health", timeout=1)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        return False
    return False


def test_sigterm_lets_in_flight_request_finish_then_exits_0(
    start_service: Callable[..., Any],
) -> None:
    svc = start_sample(start_service, grace_s=10)
    thread, outcome = request_in_background(svc.url("/slow?seconds=2"))
    wait_for_log(svc, "slow request started")

    svc.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    # new connections are refused at once, while the slow request is still running
    deadline = sent + 1.5
    while not refuses_connections(svc):
        assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
        time.sleep(0.05)
    assert thread.is_alive()

    thread.join(30)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["response"].status_code == 200
    assert outcome["response"].json() == {"slept": 2.0}
    assert svc.wait_exit(15) == 0
    assert time.monotonic() - sent < 10  # well inside the grace period
    messages = log_messages(svc)
    assert messages.index("signal received; draining") < messages.index("slow request finished")
    assert messages.index("slow request finished") < messages.index("stopped")


def test_sigterm_cuts_work_longer_than_the_grace_period_and_exits_0(
    start_service: Callable[..., Any],
) -> None:
    svc = start_sample(start_service, grace_s=1)
    thread, outcome = request_in_background(svc.url("/slow?seconds=60"))
    wait_for_log(svc, "slow request started")

    svc.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    assert svc.wait_exit(15) == 0
    assert time.monotonic() - sent < 8  # bounded by the grace, not by the 60 s request
    thread.join(10)
    assert "response" not in outcome or outcome["response"].status_code >= 500
    assert "slow request finished" not in svc.stderr()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_idle_service_exits_0_on_signal(start_service: Callable[..., Any], sig: int) -> None:
    svc = start_sample(start_service, grace_s=10)
    svc.proc.send_signal(sig)
    assert svc.wait_exit(10) == 0
    assert log_messages(svc)[-1] == "stopped"


def test_a_task_that_swallows_cancellation_does_not_keep_the_process_alive(
    start_service: Callable[..., Any],
) -> None:
    svc = start_sample(start_service, grace_s=1, HYPERINFER_SAMPLE_STUBBORN_TASK="1")
    svc.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    assert svc.wait_exit(20) == 0
    assert time.monotonic() - sent < 8  # grace (1 s) + the bounded re-cancelling (2 s)
    assert "tasks did not stop; exiting without them" in log_messages(svc)
    assert log_messages(svc)[-1] == "stopped"
