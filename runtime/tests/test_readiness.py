"""Readiness follows each dependency: 503 naming it while it is down, 200 once it is back,
with no restart of the service process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hyperinfer.runtime.testing.servers import (
    NatsServer,
    PostgresServer,
    RedisServer,
    ServerProcess,
    free_port,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def deps(
    redis_server: RedisServer, nats_server: NatsServer, private_postgres: PostgresServer
) -> dict[str, ServerProcess]:
    for server in (redis_server, nats_server, private_postgres):
        if not server.running:
            server.start()
    return {"redis": redis_server, "nats": nats_server, "postgres": private_postgres}


@pytest.mark.parametrize("dependency", ["redis", "nats", "postgres"])
def test_ready_answers_503_naming_a_stopped_dependency_then_200_without_restart(
    dependency: str, deps: dict[str, ServerProcess], start_service: Callable[..., Any]
) -> None:
    redis, nats, pg = deps["redis"], deps["nats"], deps["postgres"]
    assert isinstance(redis, RedisServer)
    assert isinstance(nats, NatsServer)
    assert isinstance(pg, PostgresServer)
    port = free_port()
    svc = start_service(
        "sample",
        port,
        HYPERINFER_SAMPLE_HTTP_PORT=port,
        HYPERINFER_REDIS_URL=redis.url,
        HYPERINFER_NATS_URL=nats.url,
        HYPERINFER_POSTGRES_DSN=pg.dsn,
    )
    ready = svc.wait_status("/health/ready", 200)
    assert ready.json()["checks"] == {"nats": "ok", "redis": "ok", "postgres": "ok"}

    server = deps[dependency]
    server.stop()
    try:
        down = svc.wait_status("/health/ready", 503)
        body = down.json()
        assert body["status"] == "not_ready"
        assert body["failing"] == [dependency]
        assert body["checks"][dependency] != "ok"
        others = {name: state for name, state in body["checks"].items() if name != dependency}
        assert set(others.values()) == {"ok"}
        # liveness is not readiness: the process is alive and says so
        assert svc.get("/health").status_code == 200
    finally:
        server.start()

    back = svc.wait_status("/health/ready", 200)
    assert back.json()["status"] == "ready"
    assert svc.proc.poll() is None
