"""`hyperinfer dlq ...` as a user runs it, against the real pipeline service over HTTP."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import orjson
import pytest
import uvicorn
from hyperinfer.event_pipeline.app import create_app
from hyperinfer.event_pipeline.settings import EventPipelineSettings
from hyperinfer.runtime.bus import Bus
from hyperinfer.runtime.connections import NatsConnection
from hyperinfer.runtime.testing.servers import free_port

pytestmark = pytest.mark.bus
KEY = "cli-test-key"
# the `dlq` group exactly as `hyperinfer` mounts it, with main()'s one-line error handling
# (run through this wrapper so other groups' work in progress cannot break this test)
WRAPPER = """
import sys, typer
from hyperinfer.client.cli import dlq
from hyperinfer.client.cli._http import CliError
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
dlq.register(app)
@app.callback()
def root() -> None: ...
try:
    app()
except CliError as exc:
    sys.stderr.write(f"error: {exc}\\n")
    sys.exit(1)
"""


@pytest.fixture
async def pipeline_url(nats_url: str, redis_url: str, postgres_dsn: str) -> AsyncIterator[str]:
    settings = EventPipelineSettings(
        nats_url=nats_url,
        redis_url=redis_url,
        postgres_dsn=postgres_dsn,
        internal_key=KEY,
        worker_enabled=False,
        apply_migrations=False,
    )
    service = create_app(settings)
    await service.startup()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(service.app, port=port, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task
    await service.shutdown()


async def cli(url: str, *args: str, key: str = KEY) -> tuple[int, str, str]:
    env = {**os.environ, "HYPERINFER_PIPELINE_URL": url, "HYPERINFER_INTERNAL_KEY": key}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRAPPER,
        "dlq",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def dead_letter(nats_url: str, count: int) -> None:
    conn = NatsConnection(nats_url, "cli-test")
    await conn.connect(5)
    bus = Bus(conn, source="cli-test")

    async def handler(env: object) -> None:
        return None

    await bus.subscribe("hyperinfer.jobs.v1.low.audit.record", handler)  # type: ignore[arg-type]
    for n in range(count):
        await conn.client.publish("hyperinfer.jobs.v1.low.audit.record", f"bad {n}".encode())
    await conn.client.flush()
    await asyncio.sleep(0.3)
    await bus.close()
    await conn.close()


async def test_list_show_replay_purge(pipeline_url: str, nats_url: str) -> None:
    code, out, _ = await cli(pipeline_url, "list")
    assert (code, out.strip()) == (0, "no dead letters")
    await dead_letter(nats_url, 3)
    code, out, _ = await cli(pipeline_url, "list", "--json")
    items = orjson.loads(out)["items"]
    assert code == 0
    assert len(items) == 3
    assert {i["reason"] for i in items} == {"invalid_payload"}
    code, out, _ = await cli(pipeline_url, "list")
    assert "INVALID_PAYLOAD" not in out
    assert "invalid_payload" in out
    assert "3 dead letter(s)" in out
    code, out, _ = await cli(pipeline_url, "show", items[0]["id"])
    assert code == 0
    assert "payload: bad 0" in out
    code, out, _ = await cli(pipeline_url, "replay", items[0]["id"])
    assert code == 0
    assert "1 replayed, 0 failed" in out
    code, out, err = await cli(pipeline_url, "purge")
    assert code == 1
    assert "--yes" in err
    code, out, _ = await cli(pipeline_url, "purge", "--yes")
    assert (code, out.strip()) == (0, "purged 2 dead letter(s)")


async def test_errors_are_one_line(pipeline_url: str) -> None:
    code, _, err = await cli(pipeline_url, "list", key="wrong")
    assert code == 1
    assert err.strip() == "error: HTTP 401: missing or wrong X-Internal-Key"
    code, _, err = await cli(pipeline_url, "show", "js:999")
    assert (code, err.strip()) == (1, "error: HTTP 404: no dead letter js:999")
    code, _, err = await cli(f"http://127.0.0.1:{free_port()}", "list")
    assert code == 1
    assert err.startswith("error: cannot reach")
