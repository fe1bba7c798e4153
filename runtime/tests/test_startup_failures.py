"""Expected start-up failures print one clear line on stderr and exit non-zero.

A real service process (``python -m hyperinfer.telemetry``) and one made only of
runtime pieces (``sample_service.py``) are run with a broken setting each.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest
from hyperinfer.runtime.testing.servers import NatsServer, RedisServer, free_port


def assert_one_clear_line(stderr: str, *expected: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert "Traceback" not in stderr
    for text in expected:
        assert text in lines[0]
    return lines[0]


@pytest.fixture
def infra_env(redis_server: RedisServer, nats_server: NatsServer) -> dict[str, str]:
    """NATS and Redis that work, so that only the setting under test is wrong."""
    for server in (redis_server, nats_server):
        if not server.running:
            server.start()
    return {"HYPERINFER_REDIS_URL": redis_server.url, "HYPERINFER_NATS_URL": nats_server.url}


def test_wrong_postgres_dsn_is_one_line_and_exit_2(
    infra_env: dict[str, str], start_service: Callable[..., Any]
) -> None:
    port = free_port()
    svc = start_service(
        "hyperinfer.telemetry",
        port,
        HYPERINFER_TELEMETRY_HTTP_PORT=port,
        HYPERINFER_POSTGRES_DSN="postgresql://nobody:hunter2@127.0.0.1:1/x",
        HYPERINFER_STARTUP_TIMEOUT_S="1",
        **infra_env,
    )
    assert svc.wait_exit(30) == 2
    line = assert_one_clear_line(
        svc.stderr(), "hyperinfer-telemetry:", "cannot reach PostgreSQL", "127.0.0.1:1"
    )
    assert "hunter2" not in line  # the password never reaches the output


def test_unreachable_redis_is_one_line_and_exit_2(
    infra_env: dict[str, str], start_service: Callable[..., Any]
) -> None:
    port = free_port()
    dead = free_port()
    svc = start_service(
        "sample",
        port,
        HYPERINFER_SAMPLE_HTTP_PORT=port,
        HYPERINFER_SAMPLE_DEPS="nats,redis",
        HYPERINFER_NATS_URL=infra_env["HYPERINFER_NATS_URL"],
        HYPERINFER_REDIS_URL=f"redis://127.0.0.1:{dead}/0",
        HYPERINFER_STARTUP_TIMEOUT_S="1",
    )
    assert svc.wait_exit(30) == 2
    assert_one_clear_line(svc.stderr(), "hyperinfer-sample:", "cannot reach Redis", str(dead))


def test_taken_port_is_one_line_and_exit_2(
    infra_env: dict[str, str], start_service: Callable[..., Any]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        svc = start_service(
            "hyperinfer.telemetry",
            port,
            HYPERINFER_TELEMETRY_HTTP_PORT=port,
            HYPERINFER_POSTGRES_DSN="postgresql://nobody@127.0.0.1:1/x",
            **infra_env,
        )
        assert svc.wait_exit(30) == 2
    assert_one_clear_line(
        svc.stderr(), "hyperinfer-telemetry:", f"cannot listen on 127.0.0.1:{port}", "in use"
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"HYPERINFER_TELEMETRY_HTTP_PORT": "eighty"},
            "invalid setting http_port (env HYPERINFER_TELEMETRY_HTTP_PORT)",
        ),
        (
            {"HYPERINFER_TELEMETRY_HTTP_PORT": "70000"},
            "invalid setting http_port (env HYPERINFER_TELEMETRY_HTTP_PORT): ",
        ),
        (
            {"HYPERINFER_REDIS_URL": "http://127.0.0.1:6379"},
            "invalid setting redis_url (env HYPERINFER_REDIS_URL): Redis URL must start with",
        ),
        (
            {"HYPERINFER_POSTGRES_DSN": "mysql://root@127.0.0.1/x"},
            "invalid setting postgres_dsn (env HYPERINFER_POSTGRES_DSN)",
        ),
        (
            {"HYPERINFER_SHUTDOWN_GRACE_S": "-1"},
            "invalid setting shutdown_grace_s (env HYPERINFER_SHUTDOWN_GRACE_S)",
        ),
        (
            {"HYPERINFER_ENVIRONMENT": "prod"},
            "admin_key holds a placeholder secret",
        ),
    ],
)
def test_bad_setting_is_one_line_and_exit_2(
    env: dict[str, str], expected: str, start_service: Callable[..., Any]
) -> None:
    svc = start_service("hyperinfer.telemetry", 0, **env)
    assert svc.wait_exit(30) == 2
    assert_one_clear_line(svc.stderr(), "hyperinfer-telemetry: ", expected)
