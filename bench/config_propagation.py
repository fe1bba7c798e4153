"""Config propagation: admin change committed → applied on 8 client agents.

    scripts/bench config_propagation [--changes 300] [--agents 8] [--preload-keys 200]
                                     [--gap-ms 30] [--json out.json]

Everything is real and private to the run: PostgreSQL (initdb), Redis, NATS, the config
service as a process, and ``--agents`` ``ConfigAgent``s, each in its own process with its
own Redis connection (as ingress replicas / thick clients are). Agents record when each
version was applied (CLOCK_MONOTONIC, shared by every process on the host).

Two paths, interleaved change by change in one run (same load, agents, snapshot size):

- **service**: ``--changes`` admin requests (key create, key revoke, team budget change in
  turn) over HTTP. The service commits (version from PostgreSQL), builds the snapshot,
  stores it in Redis and announces it, *then* answers 2xx. For each change and agent the
  latency is ``applied - request sent``: an upper bound of commit → applied, since the
  commit happens inside the request. The admin request's own duration is reported too.
- **redis only**: after each service change, the same snapshot document re-stored with
  ``store_snapshot`` at the next version from this process (no HTTP, no PostgreSQL; the
  version sequence is then moved past it): the floor set by Redis pub/sub and the
  agents' fetch and parse. ``ratio`` = service / redis-only.

Changes are paced ``--gap-ms`` apart so each one is measured on its own; a version an
agent skipped (it fetched a newer one first) counts at the time a newer one was applied.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis
from hyperinfer.client.config_agent import CONFIG, ConfigAgent, store_snapshot
from hyperinfer.config.testing import ConfigServiceProcess
from hyperinfer.contracts.config.v1 import ConfigSnapshot
from hyperinfer.runtime.testing.servers import NatsServer, PostgresServer, RedisServer


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


# --- one agent process ---------------------------------------------------------------
async def agent_main(redis_url: str, out: Path) -> None:
    """Apply snapshots until SIGTERM, then write ``[[version, applied_at], ...]`` to ``out``."""
    client = aioredis.Redis.from_url(redis_url)
    agent = ConfigAgent(client, check_interval_s=5)
    applied: list[tuple[int, float]] = []
    agent.on_change(lambda snap: applied.append((snap.version, now())))
    await agent.start(wait_s=10)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await agent.stop()
    await client.aclose()
    out.write_text(json.dumps(applied))


def start_agents(
    count: int, redis_url: str, workdir: Path
) -> list[tuple[subprocess.Popen[str], Path]]:
    agents = []
    for i in range(count):
        out = workdir / f"agent-{i}.json"
        proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--agent",
                "--redis-url",
                redis_url,
                "--agent-out",
                str(out),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        agents.append((proc, out))
    for proc, _ in agents:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"agent did not start: {line!r}")
    return agents


def stop_agents(agents: list[tuple[subprocess.Popen[str], Path]]) -> list[list[tuple[int, float]]]:
    for proc, _ in agents:
        proc.send_signal(signal.SIGTERM)
    for proc, _ in agents:
        proc.wait(30)
    return [[(int(v), float(t)) for v, t in json.loads(out.read_text())] for _, out in agents]


# --- measuring -----------------------------------------------------------------------
def latencies(
    sent: list[tuple[int, float]], applied_by_agent: list[list[tuple[int, float]]]
) -> tuple[list[float], list[float]]:
    """Per (change, agent) and per change (the slowest agent), in ms from ``sent``."""
    each: list[float] = []
    slowest: list[float] = []
    for version, t0 in sent:
        per_agent = []
        for applied in applied_by_agent:
            when = next((t for v, t in applied if v >= version), None)
            if when is None:
                raise RuntimeError(f"an agent never applied version {version}")
            per_agent.append((when - t0) * 1000)
        each += per_agent
        slowest.append(max(per_agent))
    return each, slowest


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(pct(values, 50), 2),
        "p99": round(pct(values, 99), 2),
        "max": round(max(values), 2),
    }


# --- the two paths, interleaved ------------------------------------------------------
async def interleaved(
    url: str, headers: dict[str, str], redis_url: str, dsn: str, args: argparse.Namespace
) -> tuple[list[tuple[int, float]], list[float], list[tuple[int, float]], int]:
    """Change i through the service, then the same document re-stored directly at the
    next version; the PostgreSQL sequence is moved past it so the service's next change
    is newer again. Both paths see the same load, agents and snapshot size."""
    gap_s = args.gap_ms / 1000
    sent: list[tuple[int, float]] = []
    direct: list[tuple[int, float]] = []
    request_ms: list[float] = []
    redis = aioredis.Redis.from_url(redis_url)
    pg = await asyncpg.connect(dsn)
    api = httpx.AsyncClient(base_url=f"{url}/v1/admin", headers=headers, timeout=10)
    try:
        for i in range(args.preload_keys):
            r = await api.post("/keys", json={"team_id": "bench", "name": f"pre-{i}"})
            r.raise_for_status()
        live: list[str] = []
        for i in range(args.changes):
            t0 = now()
            response = await _change(api, i, live)
            request_ms.append((now() - t0) * 1000)
            version = int(response.headers["x-config-version"])
            sent.append((version, t0))
            await asyncio.sleep(gap_s)
            document = ConfigSnapshot.model_validate_json(await redis.hget(CONFIG.key, "document"))
            again = document.model_copy(update={"version": version + 1})
            t0 = now()
            await store_snapshot(redis, again, ["bench"])
            direct.append((version + 1, t0))
            await pg.execute("SELECT setval('config_version_seq', $1)", version + 1)
            await asyncio.sleep(gap_s)
        return sent, request_ms, direct, len(again.model_dump_json())
    finally:
        await api.aclose()
        await pg.close()
        await redis.aclose()


async def _change(api: httpx.AsyncClient, i: int, live: list[str]) -> httpx.Response:
    if i % 3 == 0:
        response = await api.post("/keys", json={"team_id": "bench", "name": f"k{i}"})
        live.append(response.json()["id"])
    elif i % 3 == 1 and live:
        response = await api.post(f"/keys/{live.pop(0)}/revoke")
    else:
        response = await api.patch("/teams/bench", json={"budget_micros": 1_000_000 + i})
    response.raise_for_status()
    return response


# --- the run -------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-config-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # the private PostgreSQL may run as user postgres
        redis_server, nats_server = RedisServer(work / "redis"), NatsServer(work / "nats")
        pg = PostgresServer(work / "pg")
        servers = [redis_server, nats_server, pg]
        for server in servers:
            server.start()
        try:
            return measure(args, work, redis_server.url, nats_server.url, pg.dsn)
        finally:
            for server in reversed(servers):
                server.stop()


def measure(
    args: argparse.Namespace, work: Path, redis_url: str, nats_url: str, dsn: str
) -> dict[str, Any]:
    service = ConfigServiceProcess(
        postgres_dsn=dsn,
        redis_url=redis_url,
        nats_url=nats_url,
        workdir=work,
        # no periodic repair during the run: the direct stores put Redis ahead on purpose
        extra_env={"HYPERINFER_CONFIG_REPUBLISH_INTERVAL_S": "100000"},
    )
    with service:
        httpx.post(
            f"{service.url}/v1/admin/teams",
            json={"id": "bench", "name": "bench"},
            headers=service.admin_headers,
        ).raise_for_status()
        agents = start_agents(args.agents, redis_url, work)
        try:
            sent, request_ms, direct, size = asyncio.run(
                interleaved(service.url, service.admin_headers, redis_url, dsn, args)
            )
            time.sleep(0.5)
        finally:
            applied = stop_agents(agents)
    each, slowest = latencies(sent, applied)
    floor_each, floor_slowest = latencies(direct, applied)
    result: dict[str, Any] = {
        "agents": args.agents,
        "changes": args.changes,
        "snapshot_bytes": size,
        "service_request_to_applied_ms": summary(each),
        "service_request_to_all_agents_ms": summary(slowest),
        "admin_request_ms": summary(request_ms),
        "redis_only_store_to_applied_ms": summary(floor_each),
        "redis_only_store_to_all_agents_ms": summary(floor_slowest),
    }
    service_ms, floor_ms = (
        result["service_request_to_applied_ms"],
        result["redis_only_store_to_applied_ms"],
    )
    result["ratio_p50"] = round(service_ms["p50"] / max(floor_ms["p50"], 1e-3), 1)
    result["ratio_p99"] = round(service_ms["p99"] / max(floor_ms["p99"], 1e-3), 1)
    return result


def report(result: dict[str, Any]) -> str:
    rows = [
        ("service: request sent → applied (each agent)", "service_request_to_applied_ms"),
        ("service: request sent → applied on all agents", "service_request_to_all_agents_ms"),
        ("service: admin request (commit + publish) alone", "admin_request_ms"),
        ("redis only: stored → applied (each agent)", "redis_only_store_to_applied_ms"),
        ("redis only: stored → applied on all agents", "redis_only_store_to_all_agents_ms"),
    ]
    lines = [
        f"{result['changes']} changes, {result['agents']} agents (one process each), "
        f"snapshot {result['snapshot_bytes']} bytes",
        f"{'path':52} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}",
    ]
    for label, key in rows:
        s = result[key]
        lines.append(f"{label:52} {s['p50']:8.2f} {s['p99']:8.2f} {s['max']:8.2f}")
    lines.append(
        f"ratio service / redis only: p50 {result['ratio_p50']}x, p99 {result['ratio_p99']}x"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=300)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--preload-keys", type=int, default=200, help="keys in the snapshot first")
    parser.add_argument("--gap-ms", type=float, default=30.0, help="pause between changes")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--agent", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--agent-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.agent:
        asyncio.run(agent_main(args.redis_url, args.agent_out))
        return
    result = run(args)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
