"""`hyperinfer usage` against a real telemetry process (Redis, NATS, PostgreSQL all real)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from hyperinfer.client.cli._http import CliError
from hyperinfer.client.cli.usage import usage_app
from hyperinfer.contracts import names
from hyperinfer.runtime.testing.servers import NatsServer, RedisServer, free_port
from hyperinfer.telemetry.testing import (
    TelemetryProcess,
    entry_fields,
    eventually,
    make_usage,
    produce,
)
from typer.testing import CliRunner

ADMIN = "cli-test-admin-key"
START = datetime(2031, 5, 1, tzinfo=UTC)
END = START + timedelta(days=1)


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def telemetry(
    redis_server: RedisServer,
    nats_server: NatsServer,
    postgres_database: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TelemetryProcess]:
    """One seeded service for the module (the session's servers, emptied first)."""
    for server in (redis_server, nats_server):
        if not server.running:
            server.start()
    env = {
        "HYPERINFER_ENVIRONMENT": "test",
        "HYPERINFER_REDIS_URL": redis_server.url,
        "HYPERINFER_NATS_URL": nats_server.url,
        "HYPERINFER_POSTGRES_DSN": postgres_database,
        "HYPERINFER_ADMIN_KEY": ADMIN,
        "HYPERINFER_TELEMETRY_MAX_CLOCK_SKEW_S": str(20 * 365 * 86400),
        "HYPERINFER_TELEMETRY_RAW_RETENTION_DAYS": "0",
    }
    asyncio.run(_empty(redis_server.url, postgres_database))
    log = tmp_path_factory.mktemp("cli-usage") / "telemetry.log"
    proc = TelemetryProcess(free_port(), env, log)
    try:
        asyncio.run(_seed(redis_server.url, postgres_database))
        proc.ready()
        yield proc
    finally:
        proc.stop()


async def _empty(redis_url: str, dsn: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    await redis.flushall()
    await redis.aclose()
    pg = await asyncpg.connect(dsn)
    await pg.execute("TRUNCATE usage_events, usage_request_ids, usage_rollups, usage_rollup_cursor")
    await pg.close()


async def _seed(redis_url: str, dsn: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    events = [
        make_usage(
            f"cli-{i}",
            at=START + timedelta(minutes=7 * i),
            team_id=("team-a", "team-b", "=cmd|' /C calc'!A0")[i % 3],
            model=("m1", "m2")[i % 2],
            cost_micros=1_000_000 + i,
            prompt_tokens=10,
            completion_tokens=5,
        )
        for i in range(150)
    ]
    await produce(redis, [entry_fields(e) for e in events])
    await produce(redis, [{names.USAGE_STREAM_FIELD: b"{not json"}])
    await redis.aclose()
    pg = await asyncpg.connect(dsn)

    async def done() -> bool:
        return int(await pg.fetchval("SELECT count(*) FROM usage_events")) == 150

    try:
        await eventually(done, timeout_s=60, what="seed recorded")
    finally:
        await pg.close()


def env(proc: TelemetryProcess, key: str = ADMIN) -> dict[str, str]:
    return {"HYPERINFER_TELEMETRY_URL": proc.url, "HYPERINFER_ADMIN_KEY": key}


def period() -> list[str]:
    return ["--start", START.isoformat(), "--end", END.isoformat()]


def test_summary_json_matches_what_was_recorded(
    runner: CliRunner, telemetry: TelemetryProcess
) -> None:
    result = runner.invoke(
        usage_app, ["summary", "--group-by", "team", *period(), "--json"], env=env(telemetry)
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["totals"]["requests"] == 150
    assert body["totals"]["cost_micros"] == sum(1_000_000 + i for i in range(150))
    assert {r["team_id"]: r["requests"] for r in body["items"]} == {
        "team-a": 50,
        "team-b": 50,
        "=cmd|' /C calc'!A0": 50,
    }


def test_summary_table_and_every_page(runner: CliRunner, telemetry: TelemetryProcess) -> None:
    args = ["summary", "--group-by", "team,model", *period(), "--limit", "2"]
    first = runner.invoke(usage_app, args, env=env(telemetry))
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    assert lines[1].split()[:4] == ["TEAM", "MODEL", "REQUESTS", "ERRORS"]
    assert "more: --cursor" in first.output
    assert "total: 150 requests, 2250 tokens" in first.output

    every = runner.invoke(usage_app, [*args, "--all", "--json"], env=env(telemetry))
    items = json.loads(every.output)["items"]
    assert len(items) == 6
    assert sum(r["requests"] for r in items) == 150


def test_top_by_cost(runner: CliRunner, telemetry: TelemetryProcess) -> None:
    result = runner.invoke(
        usage_app, ["top", "--by", "model", *period(), "--json"], env=env(telemetry)
    )
    assert result.exit_code == 0, result.output
    items = json.loads(result.output)["items"]
    assert [r["model"] for r in items] == ["m2", "m1"]  # m2 carries the odd, larger costs
    human = runner.invoke(usage_app, ["top", "--by", "model", *period()], env=env(telemetry))
    assert "75.00" in human.output  # 75 requests of ~1.000000 each


def test_export_writes_csv_without_formula_cells(
    runner: CliRunner, telemetry: TelemetryProcess, tmp_path: Path
) -> None:
    out = tmp_path / "usage.csv"
    result = runner.invoke(
        usage_app,
        ["export", "--group-by", "team", *period(), "--output", str(out)],
        env=env(telemetry),
    )
    assert result.exit_code == 0, result.output
    assert "wrote 3 rows" in result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert {r["team_id"] for r in rows} == {"team-a", "team-b", "'=cmd|' /C calc'!A0"}


def test_refusals_and_an_unreachable_service_are_one_line_errors(
    runner: CliRunner, telemetry: TelemetryProcess
) -> None:
    refused = runner.invoke(usage_app, ["summary"], env=env(telemetry, key="not-a-key"))
    assert isinstance(refused.exception, CliError)
    assert str(refused.exception) == "HTTP 401: this key is not an admin key"
    nowhere = {**env(telemetry), "HYPERINFER_TELEMETRY_URL": f"http://127.0.0.1:{free_port()}"}
    down = runner.invoke(usage_app, ["top"], env=nowhere)
    assert isinstance(down.exception, CliError)
    assert str(down.exception).startswith("cannot reach http://127.0.0.1:")
    bad = runner.invoke(usage_app, ["summary", "--group-by", "planet"], env=env(telemetry))
    assert isinstance(bad.exception, CliError)
    assert "cannot group by planet" in str(bad.exception)


def test_dead_letters_are_listed_and_replayed(
    runner: CliRunner, telemetry: TelemetryProcess
) -> None:
    listed = runner.invoke(usage_app, ["dead-letters", "--json"], env=env(telemetry))
    assert listed.exit_code == 0, listed.output
    (item,) = json.loads(listed.output)["items"]
    assert item["reason"] == "invalid_payload"
    assert item["payload"] == "{not json"
    human = runner.invoke(usage_app, ["dead-letters"], env=env(telemetry))
    assert "invalid_payload" in human.output

    replayed = runner.invoke(usage_app, ["replay", item["id"], "1-1"], env=env(telemetry))
    assert replayed.exit_code == 0, replayed.output
    assert f"replayed {item['id']} as " in replayed.output
    assert "not found: 1-1" in replayed.output

    async def back_in_dlq() -> bool:  # still not JSON: refused again, under a new id
        redis = aioredis.Redis.from_url(telemetry_redis(telemetry))
        try:
            ids = [i for i, _ in await redis.xrange(names.USAGE_DLQ_STREAM)]
        finally:
            await redis.aclose()
        return len(ids) == 1 and ids[0].decode() != item["id"]

    asyncio.run(eventually(back_in_dlq, what="replayed entry refused again"))


def telemetry_redis(proc: TelemetryProcess) -> str:
    return proc.env["HYPERINFER_REDIS_URL"]
