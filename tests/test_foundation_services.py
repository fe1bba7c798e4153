"""Every service, as a real process: starts, connects to its dependencies, reports health
and metrics, and shuts down cleanly on SIGTERM (issue 2, item 8)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from hyperinfer.client.config_agent import empty_snapshot, store_snapshot
from hyperinfer.runtime.testing.servers import (
    NatsServer,
    PostgresServer,
    RedisServer,
    ServerProcess,
    free_port,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SERVICES = ["config", "ingress", "quota", "telemetry", "gpu-collector", "router", "event-pipeline"]


def env_prefix(service: str) -> str:
    return "HYPERINFER_" + service.upper().replace("-", "_") + "_"


@pytest.fixture
def service_process(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    nats_url: str,
    redis_url: str,
    postgres_dsn: str,
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    service: str = request.param
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERINFER_")}
    env |= {
        "HYPERINFER_NATS_URL": nats_url,
        "HYPERINFER_REDIS_URL": redis_url,
        "HYPERINFER_POSTGRES_DSN": postgres_dsn,
        "HYPERINFER_ENVIRONMENT": "test",
        f"{env_prefix(service)}HTTP_PORT": str(port),
    }
    log = tmp_path / f"{service}.log"
    module = "hyperinfer." + service.replace("-", "_")
    if service == "ingress":  # the data plane is ready once it holds a config snapshot
        asyncio.run(_store_empty_config(redis_url))
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", module], env=env, stderr=out)
    yield proc, port, log
    if proc.poll() is None:
        proc.kill()
        proc.wait()


async def _store_empty_config(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await store_snapshot(client, empty_snapshot())
    finally:
        await client.aclose()


def wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> httpx.Response:
    deadline = time.monotonic() + 60
    last: httpx.Response | None = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited {proc.returncode}: {log.read_text()[-2000:]}"
        try:
            last = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=3)
        except httpx.HTTPError:
            last = None
        if last is not None and last.status_code == 200:
            return last
        time.sleep(0.2)
    got = "no answer" if last is None else f"{last.status_code} {last.text}"
    pytest.fail(f"not ready within 60 s ({got}): {log.read_text()[-2000:]}")


@pytest.mark.parametrize("service_process", SERVICES, indirect=True)
def test_service_starts_ready_reports_and_stops_cleanly(
    service_process: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    proc, port, log = service_process
    ready = wait_ready(proc, port, log).json()
    assert ready["status"] == "ready"
    assert ready["checks"], "a service with no dependency checks cannot report readiness"
    assert set(ready["checks"].values()) == {"ok"}

    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/health", timeout=3).json()["status"] == "ok"
    detailed = httpx.get(f"{base}/health/detailed", timeout=3).json()
    assert detailed["dependencies"] == ready["checks"]
    metrics = httpx.get(f"{base}/metrics", timeout=3)
    assert metrics.status_code == 200
    assert "hyperinfer_http_request_duration_seconds" in metrics.text

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()[-2000:]
    assert "Traceback" not in log.read_text()


@pytest.fixture
def system_database(private_postgres: PostgresServer) -> Iterator[str]:
    """An empty database on a PostgreSQL of our own, which the test may stop."""
    if not private_postgres.running:
        private_postgres.start()
    name = f"system_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    admin = [private_postgres.bindir / "psql", "-h", "127.0.0.1", "-p", str(private_postgres.port)]
    subprocess.run(
        [*map(str, admin), "-U", "postgres", "-c", f'CREATE DATABASE "{name}"'],
        check=True,
        capture_output=True,
    )
    yield private_postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
    if not private_postgres.running:
        private_postgres.start()
    subprocess.run(
        [*map(str, admin), "-U", "postgres", "-c", f'DROP DATABASE "{name}" WITH (FORCE)'],
        check=True,
        capture_output=True,
    )


def test_every_service_reports_each_lost_dependency_and_recovers_without_restart(
    tmp_path: Path,
    redis_server: RedisServer,
    nats_server: NatsServer,
    private_postgres: PostgresServer,
    system_database: str,
) -> None:
    servers: dict[str, ServerProcess] = {
        "redis": redis_server,
        "nats": nats_server,
        "postgres": private_postgres,
    }
    for server in servers.values():
        if not server.running:
            server.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERINFER_")}
    env |= {
        "HYPERINFER_NATS_URL": nats_server.url,
        "HYPERINFER_REDIS_URL": redis_server.url,
        "HYPERINFER_POSTGRES_DSN": system_database,
        "HYPERINFER_ENVIRONMENT": "test",
    }
    running: dict[str, tuple[subprocess.Popen[bytes], int, Path]] = {}
    try:
        for service in SERVICES:  # config first: it applies the migrations
            port = free_port()
            log = tmp_path / f"{service}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "hyperinfer." + service.replace("-", "_")],
                    env=env | {f"{env_prefix(service)}HTTP_PORT": str(port)},
                    stderr=out,
                )
            running[service] = (proc, port, log)
            if service == "config":
                wait_ready(proc, port, log)
        checks = {name: set(wait_ready(*run).json()["checks"]) for name, run in running.items()}

        for dependency, server in servers.items():
            users = [name for name, names in checks.items() if dependency in names]
            assert users, f"no service checks {dependency}"
            server.stop()
            try:
                for name in users:
                    body = wait_status(*running[name], 503).json()
                    assert dependency in body["failing"], (name, body)
            finally:
                server.start()
            for name in users:
                wait_ready(*running[name])
        for name, (proc, _, log) in running.items():
            assert proc.poll() is None, f"{name} exited: {log.read_text()[-2000:]}"
    finally:
        for proc, _, _ in running.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _, _ in running.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_status(proc: subprocess.Popen[bytes], port: int, log: Path, status: int) -> httpx.Response:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited {proc.returncode}: {log.read_text()[-2000:]}"
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5)
        except httpx.HTTPError:
            answer = None
        if answer is not None and answer.status_code == status:
            return answer
        time.sleep(0.2)
    pytest.fail(f"/health/ready did not answer {status} within 30 s: {log.read_text()[-2000:]}")
