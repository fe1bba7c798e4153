"""The ledger consumer against real Redis and PostgreSQL (in-process, one or two consumers)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import orjson
from hyperinfer.contracts import names, utc_now
from hyperinfer.runtime import PostgresPool, RedisConnection
from hyperinfer.telemetry.domain import latency_bucket
from hyperinfer.telemetry.testing import entry_fields, eventually, make_usage, produce

STREAM, GROUP, DLQ = names.USAGE_STREAM, names.USAGE_CONSUMER_GROUP, names.USAGE_DLQ_STREAM


async def count(pg: PostgresPool, sql: str, *args: Any) -> int:
    async with pg.pool.acquire() as conn:
        return int(await conn.fetchval(sql, *args) or 0)


async def rows(pg: PostgresPool, sql: str, *args: Any) -> list[asyncpg.Record]:
    async with pg.pool.acquire() as conn:
        return list(await conn.fetch(sql, *args))


async def settled(redis: RedisConnection) -> bool:
    """Every entry delivered to the group and acknowledged."""
    groups = await redis.client.xinfo_groups(STREAM)
    group = next(g for g in groups if g["name"] == GROUP.encode())
    return int(group["pending"]) == 0 and int(group["lag"] or 0) == 0


async def test_events_become_rows_and_rollups_once_each(
    make_ledger: Any, pg: PostgresPool, redis: RedisConnection
) -> None:
    rig = await make_ledger()
    at = utc_now().replace(second=30, microsecond=0)
    events = [
        make_usage(f"r{i}", at=at, prompt_tokens=10 + i, completion_tokens=i, cost_micros=100 * i)
        for i in range(50)
    ]
    entries = [entry_fields(e) for e in events]
    # the same request again: adjacent (same batch), and later (another batch)
    entries.insert(10, entry_fields(events[9]))
    await produce(redis.client, entries)
    await eventually(lambda: settled(redis), what="first wave acknowledged")
    await produce(redis.client, [entry_fields(events[0]), entry_fields(events[49])])
    await eventually(lambda: settled(redis), what="replays acknowledged")

    assert await count(pg, "SELECT count(*) FROM usage_events") == 50
    assert await count(pg, "SELECT count(*) FROM usage_request_ids") == 50
    expected = (sum(10 + i for i in range(50)), sum(range(50)), sum(100 * i for i in range(50)))
    for window in ("minute", "hour", "day"):
        (row,) = await rows(
            pg,
            "SELECT sum(requests) r, sum(prompt_tokens) p, sum(completion_tokens) c,"
            " sum(cost_micros) m FROM usage_rollups WHERE window_kind = $1",
            window,
        )
        assert (row["r"], row["p"], row["c"], row["m"]) == (50, *expected)
    assert rig.ledger.recorded == 50
    assert rig.ledger.duplicates == 3
    assert rig.metric("hyperinfer_ledger_events_total", outcome="recorded") == 50
    assert rig.metric("hyperinfer_ledger_events_total", outcome="duplicate") == 3
    labels = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": "chat-small",
        "gen_ai_response_model": "gpt-4o-mini",
        "hyperinfer_team_id": "team-a",
        "hyperinfer_backend_id": "openai-main",
    }
    assert rig.metric("gen_ai_client_token_usage_count", **labels, gen_ai_token_type="input") == 50
    tokens_in = rig.metric("gen_ai_client_token_usage_sum", **labels, gen_ai_token_type="input")
    assert tokens_in == expected[0]


async def test_rollup_histogram_counts_each_latency_in_its_bucket(
    make_ledger: Any, pg: PostgresPool, redis: RedisConnection
) -> None:
    await make_ledger()
    latencies = [0.5, 3.0, 99.9, 100.0, 4200.0, 999_999.0]
    at = utc_now()
    await produce(
        redis.client,
        [entry_fields(make_usage(f"l{i}", at=at, latency_ms=v)) for i, v in enumerate(latencies)],
    )
    await eventually(lambda: settled(redis))
    (row,) = await rows(
        pg, "SELECT latency_hist, latency_ms_sum FROM usage_rollups WHERE window_kind = 'day'"
    )
    expected = [0] * len(row["latency_hist"])
    for value in latencies:
        expected[latency_bucket(value)] += 1
    assert list(row["latency_hist"]) == expected
    assert row["latency_ms_sum"] == sum(latencies)


async def test_poison_entries_are_dead_lettered_with_reasons_and_the_rest_flows(
    make_ledger: Any, pg: PostgresPool, redis: RedisConnection
) -> None:
    rig = await make_ledger()
    good = [entry_fields(make_usage(f"g{i}")) for i in range(20)]
    v2 = orjson.loads(good[0][names.USAGE_STREAM_FIELD])
    v2["schema_version"] = 2
    nul = make_usage("nul", team_id="bad\x00team")
    poison: list[dict[str | bytes, bytes]] = [
        {names.USAGE_STREAM_FIELD: b"{not json"},
        {"something": b"else"},
        {names.USAGE_STREAM_FIELD: orjson.dumps(v2)},
        {names.USAGE_STREAM_FIELD: orjson.dumps({**v2, "schema_version": 1, "data": {}})},
        entry_fields(nul),
        entry_fields(make_usage("future", at=utc_now() + timedelta(days=3))),
        entry_fields(make_usage("ancient", at=utc_now() - timedelta(days=400))),
    ]
    mixed = good[:10] + poison + good[10:]
    ids = await produce(redis.client, mixed)
    await eventually(lambda: settled(redis))

    assert await count(pg, "SELECT count(*) FROM usage_events") == 20
    dlq = await redis.client.xrange(DLQ)
    reasons = [fields[b"reason"].decode() for _, fields in dlq]
    assert reasons == [
        "invalid_payload",
        "invalid_payload",
        "unsupported_schema_version",
        "invalid_payload",
        "invalid_payload",
        "invalid_payload",
        "expired",
    ]
    first = orjson.loads(dlq[0][1][b"envelope"])
    assert first["type"] == "dlq.dead_lettered"
    assert first["data"]["original_payload"] == "{not json"
    assert first["data"]["original_id"] == ids[10].decode()
    assert first["data"]["detail"].startswith("not JSON")
    assert "team_id contains a NUL" in orjson.loads(dlq[4][1][b"envelope"])["data"]["detail"]
    assert rig.metric("hyperinfer_ledger_dead_lettered_total", reason="expired") == 1
