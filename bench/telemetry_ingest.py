"""Telemetry ledger benchmark: sustained ingest of one replica, and its lag under steady load.

    scripts/bench telemetry_ingest [--events 100000] [--rate 2000] [--duration 30] [--json out]

Private Redis, NATS and PostgreSQL (initdb; fsync off, as the test servers) on free ports,
one real ``hyperinfer-telemetry`` process (default settings: batches of up to 1000).

1. **ingest**: ``--events`` usage events (5% duplicates) are in the stream before the
   replica starts; events/s = distinct rows / (last commit - first commit), from the rows'
   ``recorded_at`` (transaction start), plus the wall time from start to fully acknowledged.
   Side by side, in the same run and database: the same ledger write (dedupe, rollups,
   raw row) committed one event per transaction, as a per-message consumer would, over
   ``--single-events`` (in-process, so without any Redis or decoding cost at all).
2. **lag**: with the replica running, a producer XADDs ``--rate`` events/s (pipelined every
   20 ms) for ``--duration`` s; the group's lag (undelivered entries) and pending count
   are sampled every 0.25 s, and each event's end-to-end delay (``recorded_at`` minus the
   producer's ``finished_at``) comes from PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from hyperinfer.contracts import names
from hyperinfer.runtime import PostgresPool
from hyperinfer.runtime.migrate import apply_migrations
from hyperinfer.runtime.testing.servers import NatsServer, PostgresServer, RedisServer, free_port
from hyperinfer.telemetry.adapters.postgres_ledger import PostgresLedgerStore
from hyperinfer.telemetry.intake import IntakeRules, sort_batch
from hyperinfer.telemetry.testing import TelemetryProcess, entry_fields, make_usage, produce

STREAM, GROUP = names.USAGE_STREAM, names.USAGE_CONSUMER_GROUP


def events(prefix: str, n: int, duplicates: float = 0.05) -> list[dict[str | bytes, bytes]]:
    """100 keys of 20 teams, each key on one of 3 models (2 backends each): ~200 rollup
    groups per window and batch, the cardinality of a busy shared platform."""
    made = []
    for i in range(n):
        key = i % 100
        model = (key + i // 100) % 3 if key % 2 else key % 3
        made.append(
            make_usage(
                f"{prefix}-{i}",
                team_id=f"team-{key % 20}",
                key_id=f"key-{key}",
                model=("m-large", "m-small", "m-embed")[model],
                backend_id=f"b{model}-{i % 2}",
                prompt_tokens=100 + i % 900,
                completion_tokens=i % 400,
                cost_micros=i % 5000,
                latency_ms=float(10 + i % 4000),
            )
        )
    entries = [entry_fields(e) for e in made]
    for i in range(int(n * duplicates)):  # a producer's retries
        entries.insert(i * 20 + 1, entries[i * 20])
    return entries


async def fresh_database(admin_dsn: str, name: str) -> str:
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    dsn = admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(dsn)
    await apply_migrations(conn)
    await conn.close()
    return dsn


async def group_state(redis: aioredis.Redis) -> tuple[int, int]:
    """(lag, pending) of the telemetry group."""
    for g in await redis.xinfo_groups(STREAM):
        if g["name"] == GROUP.encode():
            return int(g["lag"] or 0), int(g["pending"])
    return -1, -1


async def wait_drained(redis: aioredis.Redis, timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if await group_state(redis) == (0, 0):
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise TimeoutError("the replica did not drain the stream in time")


def replica(env: dict[str, str], workdir: Path, name: str) -> TelemetryProcess:
    return TelemetryProcess(free_port(), env, workdir / f"{name}.log")


async def ingest(env: dict[str, str], redis: aioredis.Redis, dsn: str, n: int, wd: Path) -> dict:
    entries = events("ingest", n)
    await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    await produce(redis, entries, chunk=2000)
    proc = replica(env, wd, "ingest")
    started = time.monotonic()
    try:
        await asyncio.to_thread(proc.ready, 60)
        wall = await wait_drained(redis, 600) + (time.monotonic() - started)
    finally:
        proc.stop()
    conn = await asyncpg.connect(dsn)
    row = await conn.fetchrow(
        "SELECT count(*) n, extract(epoch FROM max(recorded_at) - min(recorded_at)) span"
        " FROM usage_events"
    )
    batches = await conn.fetchval("SELECT count(DISTINCT recorded_at) FROM usage_events")
    await conn.close()
    distinct = int(row["n"])
    span = float(row["span"] or 0) or 1e-9
    return {
        "entries": len(entries),
        "distinct_rows": distinct,
        "batches": int(batches),
        "events_per_s": round(distinct / span),
        "entries_per_s_incl_duplicates": round(len(entries) / span),
        "wall_s_start_to_acked": round(wall, 2),
    }


async def one_by_one(dsn: str, n: int) -> dict:
    """The same ledger write, one event per transaction: what a per-message consumer does."""
    pool = PostgresPool(dsn, max_size=1)
    await pool.connect(10)
    store = PostgresLedgerStore(pool)
    rules = IntakeRules(datetime.now(UTC), timedelta(days=1), None, 5)
    entries = [(f"0-{i}".encode(), _as_bytes(f)) for i, f in enumerate(events("single", n, 0))]
    decoded = sort_batch(entries, {}, rules).events
    started = time.perf_counter()
    for event in decoded:
        await store.write([event])
    took = time.perf_counter() - started
    await pool.close()
    return {"events": n, "events_per_s": round(n / took)}


def _as_bytes(fields: dict[str | bytes, bytes]) -> dict[bytes, bytes]:
    return {k.encode() if isinstance(k, str) else k: v for k, v in fields.items()}


async def lag(
    env: dict[str, str], redis: aioredis.Redis, dsn: str, rate: int, duration: float, wd: Path
) -> dict:
    await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    proc = replica(env, wd, "lag")
    await asyncio.to_thread(proc.ready, 60)
    samples: list[tuple[int, int]] = []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            samples.append(await group_state(redis))
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample())
    tick, sent, seq = 0.02, 0, 0
    started = time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < duration:
            due = int(elapsed * rate) - sent
            if due > 0:
                now = datetime.now(UTC)
                batch = [
                    entry_fields(make_usage(f"lag-{seq + i}", at=now, team_id=f"t{i % 10}"))
                    for i in range(due)
                ]
                await produce(redis, batch, chunk=due)
                sent += due
                seq += due
            await asyncio.sleep(tick)
        produced_for = time.monotonic() - started
        drain = await wait_drained(redis, 120)
    finally:
        stop.set()
        await sampler
        proc.stop()
    conn = await asyncpg.connect(dsn)
    delays = [
        float(r[0])
        for r in await conn.fetch(
            "SELECT extract(epoch FROM recorded_at - finished_at) * 1000 FROM usage_events"
        )
    ]
    await conn.close()
    delays.sort()
    lags = [s[0] for s in samples]
    pendings = [s[1] for s in samples]
    return {
        "rate_target": rate,
        "rate_achieved": round(sent / produced_for),
        "events": sent,
        "recorded": len(delays),
        "lag_entries_p50": statistics.median(lags),
        "lag_entries_max": max(lags),
        "pending_max": max(pendings),
        "delay_ms_p50": round(delays[len(delays) // 2], 1),
        "delay_ms_p99": round(delays[int(len(delays) * 0.99)], 1),
        "delay_ms_max": round(delays[-1], 1),
        "drain_after_load_s": round(drain, 2),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="hi-bench-telemetry-"))
    pg_dir = Path(
        tempfile.mkdtemp(prefix="hi-bench-pg-")
    )  # its own: the server may run as postgres
    redis_server = RedisServer(workdir / "redis")
    nats_server = NatsServer(workdir / "nats")
    pg_server = PostgresServer(pg_dir)
    for server in (redis_server, nats_server, pg_server):
        server.start()
    redis = aioredis.Redis.from_url(redis_server.url)
    try:
        results: dict[str, Any] = {"when": datetime.now(UTC).isoformat(timespec="seconds")}
        for phase in ("ingest", "lag"):
            await redis.flushall()
            dsn = await fresh_database(pg_server.dsn, f"bench_{phase}")
            env = {
                "HYPERINFER_REDIS_URL": redis_server.url,
                "HYPERINFER_NATS_URL": nats_server.url,
                "HYPERINFER_POSTGRES_DSN": dsn,
                "HYPERINFER_LOG_LEVEL": "WARNING",
            }
            if phase == "ingest":
                results["ingest"] = await ingest(env, redis, dsn, args.events, workdir)
                results["one_event_per_transaction"] = await one_by_one(dsn, args.single_events)
                results["ratio_batched_vs_one_by_one"] = round(
                    results["ingest"]["events_per_s"]
                    / results["one_event_per_transaction"]["events_per_s"],
                    1,
                )
            else:
                results["lag"] = await lag(env, redis, dsn, args.rate, args.duration, workdir)
        return results
    finally:
        await redis.aclose()
        for server in (redis_server, nats_server, pg_server):
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(pg_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--single-events", type=int, default=5_000)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--json", type=Path, default=None)
    options = parser.parse_args()
    text = json.dumps(asyncio.run(main(options)), indent=2)
    print(text)
    if options.json:
        options.json.write_text(text)
