"""Routing simulation: score-based routing vs round-robin vs least-requests on a skewed fleet.

    uv run python bench/routing_sim.py [--rate 40] [--duration 30] [--warmup 5]
        [--concurrency 48] [--strategies round_robin,least_requests,...] [--json out.json]

``HYPERINFER_ROUTER_*`` / ``HYPERINFER_GPU_COLLECTOR_*`` in the environment override the
bench's own settings of those services (e.g. ``HYPERINFER_ROUTER_SCORE_WEIGHTS``).

Everything is real except the engines: private Redis and NATS servers, the fleet
(``routing_sim_fleet.py``: FakeUpstream engines with a capacity model and vLLM-style
``/metrics`` over real HTTP, one process), and the gpu-collector, router and ingress
services as their own processes. The load generator (this process) runs, for each
strategy, side by side in one run:

- an **open loop**: Poisson arrivals at ``--rate`` requests/s for ``--warmup`` +
  ``--duration`` seconds; latency of every request arriving after the warm-up (waiting for
  the stragglers); goodput = those completed inside the window / window length;
- a **closed loop**: ``--concurrency`` clients sending back to back (maximum throughput).

Strategies (how each request picks its backend):

- ``round_robin``: cycle through the backends (client side);
- ``least_requests``: the backend with the fewest requests this client has in flight
  (client side, ties at random) — the classic load-balancer baseline, with a perfect view
  because one client sends everything;
- ``least_requests_x4``: the same done by 4 data-plane replicas taking turns, each seeing
  only its own in-flight requests (what least-requests is in a scaled-out deployment);
- ``score``: a weighted random pick from the router's table as the data plane applies it
  (``RoutingTableAgent`` + ``hyperinfer.router.domain.pick``), request sent directly;
- ``score_ingress``: through the real ingress process (auth, quota reserve/settle, usage
  events, its own weighted pick from the same table) — the production path;
- ``score_p2c``: two weighted picks from the table, the one with fewer requests in flight
  here wins — a suggestion for the data plane (global weights + local load), not what it
  does today.

Per-backend shares are read from each engine's ``vllm:request_success_total``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from hyperinfer.client.config_agent import store_snapshot
from hyperinfer.client.keys import hash_api_key
from hyperinfer.client.routing_table import RoutingTableAgent
from hyperinfer.contracts.config.v1 import (
    AliasConfig,
    AliasTarget,
    BackendConfig,
    ConfigSnapshot,
    KeyConfig,
    QuotaConfig,
    TeamConfig,
)
from hyperinfer.gpu_collector.engines import parse_prometheus_text
from hyperinfer.router.domain import pick
from hyperinfer.runtime.testing.servers import NatsServer, RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
ALIAS, MODEL, TEAM = "sim", "m", "team-sim"
API_KEY = "hi-sim-0123456789abcdef0123456789abcdef"
SALT = "sim-salt"

# The skewed fleet: one big engine, one with other tenants' load on it, a small one and an
# old slow one. Spare capacity (requests/s): big 40, mid 20-8=12, small 10, slow 6.7.
FLEET: dict[str, dict[str, float]] = {
    "big": {"slots": 8, "service_s": 0.2},
    "mid": {"slots": 4, "service_s": 0.2, "background_rps": 8},
    "small": {"slots": 2, "service_s": 0.2},
    "slow": {"slots": 4, "service_s": 0.6},
}
COLLECTOR_ENV = {"SCRAPE_INTERVAL_S": "0.5", "SCRAPE_TIMEOUT_S": "1.0", "POLL_INTERVAL_S": "5"}
ROUTER_ENV = {
    "RECOMPUTE_INTERVAL_S": "0.25",
    "MATERIAL_CHANGE": "0.02",
    "PUBLISH_MAX_INTERVAL_S": "2",
    "BACKEND_STALE_AFTER_S": "5",
}


@dataclass
class Outcome:
    arrived: float
    latency_s: float
    ok: bool
    status: str = "200"


@dataclass
class Stats:
    strategy: str
    loop: str
    requests: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    goodput_rps: float
    makespan_rps: float
    shares: dict[str, float] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)


# --- strategies ------------------------------------------------------------------------
class Strategy:
    name = "base"
    via_ingress = False

    def choose(self) -> str:
        raise NotImplementedError

    def started(self, backend: str) -> object:
        """Called as the request leaves; what it returns comes back to ``finished``."""
        return None

    def finished(self, backend: str, token: object) -> None:
        pass


class RoundRobin(Strategy):
    name = "round_robin"

    def __init__(self, backends: list[str]) -> None:
        self._cycle = itertools.cycle(backends)

    def choose(self) -> str:
        return next(self._cycle)


class LeastRequests(Strategy):
    name = "least_requests"

    def __init__(self, backends: list[str], rng: random.Random) -> None:
        self.in_flight = dict.fromkeys(backends, 0)
        self._rng = rng

    def choose(self) -> str:
        fewest = min(self.in_flight.values())
        return self._rng.choice([b for b, n in self.in_flight.items() if n == fewest])

    def started(self, backend: str) -> object:
        self.in_flight[backend] += 1
        return None

    def finished(self, backend: str, token: object) -> None:
        self.in_flight[backend] -= 1


class LeastRequestsReplicas(Strategy):
    """Least-requests as N data-plane replicas do it: each sees only its own in-flight requests.

    Requests are spread over the replicas in turn (a front load balancer).
    """

    name = "least_requests_x4"

    def __init__(self, backends: list[str], rng: random.Random, replicas: int = 4) -> None:
        self._turn = itertools.cycle([LeastRequests(backends, rng) for _ in range(replicas)])
        self._current: LeastRequests | None = None

    def choose(self) -> str:
        self._current = next(self._turn)
        return self._current.choose()

    def started(self, backend: str) -> object:
        replica = self._current
        assert replica is not None
        replica.started(backend)
        return replica

    def finished(self, backend: str, token: object) -> None:
        assert isinstance(token, LeastRequests)
        token.finished(backend, None)


class ScoreTable(Strategy):
    name = "score"

    def __init__(self, agent: RoutingTableAgent, rng: random.Random) -> None:
        self._agent = agent
        self._rng = rng

    def choose(self) -> str:
        choice = pick(self._agent.table.aliases[ALIAS], self._rng)
        assert choice is not None, "the router ejected every backend"
        return choice.backend_id


class ScoreTwoChoices(LeastRequests):
    """Two weighted picks from the router's table; the one with fewer requests in flight.

    Not what the data plane does today: a suggestion (global weights + local load).
    """

    name = "score_p2c"

    def __init__(self, backends: list[str], agent: RoutingTableAgent, rng: random.Random) -> None:
        super().__init__(backends, rng)
        self._agent = agent

    def choose(self) -> str:
        first, second = (pick(self._agent.table.aliases[ALIAS], self._rng) for _ in range(2))
        assert first is not None, "the router ejected every backend"
        assert second is not None
        a, b = first.backend_id, second.backend_id
        return a if self.in_flight[a] <= self.in_flight[b] else b


class ThroughIngress(Strategy):
    name = "score_ingress"
    via_ingress = True

    def choose(self) -> str:
        return "ingress"


# --- the world -----------------------------------------------------------------------------
@dataclass
class World:
    ports: dict[str, int]
    ingress_url: str
    http: httpx.AsyncClient
    agent: RoutingTableAgent
    procs: list[subprocess.Popen[bytes]]

    def url(self, backend: str) -> str:
        return f"http://127.0.0.1:{self.ports[backend]}"


def snapshot(ports: dict[str, int]) -> ConfigSnapshot:
    backends = {
        name: BackendConfig(
            id=name,
            name=name,
            kind="openai_compatible",
            base_url=f"http://127.0.0.1:{port}/v1",
            models=[MODEL],
            tags=["engine:vllm"],
            timeout_s=600,
        )
        for name, port in ports.items()
    }
    targets = [AliasTarget(backend_id=name, model=MODEL) for name in ports]
    return ConfigSnapshot(
        version=1,
        generated_at=datetime.now(UTC),
        key_hash_salt=SALT,
        teams={TEAM: TeamConfig(id=TEAM, name="sim")},
        keys={hash_api_key(API_KEY, SALT): KeyConfig(id="key-sim", team_id=TEAM)},
        aliases=[AliasConfig(name=ALIAS, targets=targets)],
        quotas=[QuotaConfig(scope="team", subject_id=TEAM, team_id=TEAM, rpm=10**9, tpm=10**12)],
        backends=backends,
    )


def service(
    module: str, prefix: str, own: dict[str, str], shared: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    defaults = {f"HYPERINFER_{prefix}_{k}": v for k, v in own.items()}
    env = {**defaults, **os.environ, **shared}  # the caller's environment may override
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module], env=env, stdout=out, stderr=out, cwd=ROOT
        )


async def wait_http(http: httpx.AsyncClient, url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if (await http.get(url)).status_code == 200:
                return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready")


async def start_world(workdir: Path, redis_url: str, nats_url: str) -> World:
    fleet = subprocess.Popen(
        [sys.executable, str(ROOT / "bench/routing_sim_fleet.py"), json.dumps(FLEET)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert fleet.stdout is not None
    ports = json.loads(await asyncio.to_thread(fleet.stdout.readline))
    redis = aioredis.Redis.from_url(redis_url)
    await store_snapshot(redis, snapshot(ports))
    shared = {
        "HYPERINFER_REDIS_URL": redis_url,
        "HYPERINFER_NATS_URL": nats_url,
        "HYPERINFER_LOG_LEVEL": "WARNING",
        "HYPERINFER_INGRESS_REQUIRE_BUDGETS_LOADED": "false",
    }
    http_ports = {name: free_port() for name in ("collector", "router", "ingress")}
    procs = [
        fleet,
        service(
            "hyperinfer.gpu_collector",
            "GPU_COLLECTOR",
            {**COLLECTOR_ENV, "HTTP_PORT": str(http_ports["collector"])},
            shared,
            workdir / "collector.log",
        ),
        service(
            "hyperinfer.router",
            "ROUTER",
            {**ROUTER_ENV, "HTTP_PORT": str(http_ports["router"])},
            shared,
            workdir / "router.log",
        ),
        service(
            "hyperinfer.ingress",
            "INGRESS",
            {"HTTP_PORT": str(http_ports["ingress"])},
            shared,
            workdir / "ingress.log",
        ),
    ]
    http = httpx.AsyncClient(
        timeout=900, limits=httpx.Limits(max_connections=None, max_keepalive_connections=400)
    )
    for port in http_ports.values():
        await wait_http(http, f"http://127.0.0.1:{port}/health/ready")
    agent = RoutingTableAgent(redis, check_interval_s=1.0)
    await agent.start(wait_s=10)
    deadline = time.monotonic() + 30
    while ALIAS not in agent.table.aliases and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return World(ports, f"http://127.0.0.1:{http_ports['ingress']}", http, agent, procs)


async def stop_world(world: World) -> None:
    await world.agent.stop()
    await world.http.aclose()
    for proc in reversed(world.procs):
        if proc.stdin is not None:
            proc.stdin.close()
        proc.terminate()
    for proc in world.procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()


# --- load --------------------------------------------------------------------------------
async def one_request(world: World, strategy: Strategy) -> Outcome:
    backend = strategy.choose()
    body = {"model": MODEL, "messages": [{"role": "user", "content": "route me"}], "max_tokens": 16}
    if strategy.via_ingress:
        url, headers = world.ingress_url, {"authorization": f"Bearer {API_KEY}"}
        body["model"] = ALIAS
    else:
        url, headers = world.url(backend), {}
    token = strategy.started(backend)
    started = time.monotonic()
    try:
        reply = await world.http.post(url + "/v1/chat/completions", json=body, headers=headers)
        status = str(reply.status_code)
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    finally:
        strategy.finished(backend, token)
    return Outcome(started, time.monotonic() - started, status == "200", status)


async def open_loop(
    world: World,
    strategy: Strategy,
    rate: float,
    warmup: float,
    duration: float,
    rng: random.Random,
) -> tuple[list[Outcome], float, float]:
    tasks: list[asyncio.Task[Outcome]] = []
    begin = time.monotonic()
    window = (begin + warmup, begin + warmup + duration)
    next_at = begin
    while next_at < window[1]:
        next_at += rng.expovariate(rate)
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        tasks.append(asyncio.create_task(one_request(world, strategy)))
    outcomes = await asyncio.gather(*tasks)
    return [o for o in outcomes if o.arrived >= window[0]], window[0], window[1]


async def closed_loop(
    world: World, strategy: Strategy, concurrency: int, warmup: float, duration: float
) -> tuple[list[Outcome], float, float]:
    begin = time.monotonic()
    window = (begin + warmup, begin + warmup + duration)
    outcomes: list[Outcome] = []

    async def client() -> None:
        while time.monotonic() < window[1]:
            outcome = await one_request(world, strategy)
            if outcome.arrived >= window[0]:
                outcomes.append(outcome)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return outcomes, window[0], window[1]


async def successes(world: World) -> dict[str, float]:
    counts = {}
    for name in world.ports:
        text = (await world.http.get(world.url(name) + "/metrics")).text
        samples = parse_prometheus_text(text).get("vllm:request_success_total", [])
        counts[name] = sum(v for labels, v in samples if labels.get("model_name") == MODEL)
    return counts


async def wait_idle(world: World, timeout_s: float = 300) -> None:
    """Until no engine runs or queues a request of ours (other tenants' load goes on)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        busy = 0.0
        for name in world.ports:
            samples = parse_prometheus_text(
                (await world.http.get(world.url(name) + "/metrics")).text
            )
            for metric in ("vllm:num_requests_running", "vllm:num_requests_waiting"):
                busy += sum(
                    v for labels, v in samples.get(metric, []) if labels.get("model_name") == MODEL
                )
        if busy == 0:
            await asyncio.sleep(3)  # let the collector and router see the idle fleet
            return
        await asyncio.sleep(0.5)
    raise RuntimeError("the fleet did not drain")


def summarise(
    strategy: str,
    loop: str,
    outcomes: list[Outcome],
    start: float,
    end: float,
    before: dict[str, float],
    after: dict[str, float],
) -> Stats:
    ok = [o for o in outcomes if o.ok]
    latencies = sorted(o.latency_s * 1000 for o in ok) or [float("nan")]
    done_in_window = sum(1 for o in ok if o.arrived + o.latency_s <= end)
    last = max((o.arrived + o.latency_s for o in ok), default=end)
    served = {b: after[b] - before[b] for b in after}
    total = sum(served.values()) or 1.0
    return Stats(
        strategy=strategy,
        loop=loop,
        requests=len(outcomes),
        errors=len(outcomes) - len(ok),
        p50_ms=round(statistics.median(latencies), 1),
        p90_ms=round(_quantile(latencies, 0.90), 1),
        p99_ms=round(_quantile(latencies, 0.99), 1),
        max_ms=round(latencies[-1], 1),
        goodput_rps=round(done_in_window / (end - start), 2),
        makespan_rps=round(len(ok) / (last - start), 2),
        shares={b: round(n / total, 3) for b, n in served.items()},
        failures=dict(Counter(o.status for o in outcomes if not o.ok)),
    )


def _quantile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def run(args: argparse.Namespace) -> list[Stats]:
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="routing-sim-"))
    redis_server, nats_server = RedisServer(workdir / "redis"), NatsServer(workdir / "nats")
    redis_server.start()
    nats_server.start()
    results: list[Stats] = []
    world = None
    try:
        world = await start_world(workdir, redis_server.url, nats_server.url)
        backends = list(world.ports)
        factories: dict[str, Callable[[], Strategy]] = {
            "round_robin": lambda: RoundRobin(backends),
            "least_requests": lambda: LeastRequests(backends, rng),
            "least_requests_x4": lambda: LeastRequestsReplicas(backends, rng),
            "score": lambda: ScoreTable(world.agent, rng),
            "score_ingress": ThroughIngress,
            "score_p2c": lambda: ScoreTwoChoices(backends, world.agent, rng),
        }
        for name in args.strategies.split(","):
            for loop in ("open", "closed"):
                if loop == "closed" and args.concurrency <= 0:
                    continue
                await wait_idle(world)
                before = await successes(world)
                strategy = factories[name]()
                runner: Awaitable[tuple[list[Outcome], float, float]]
                if loop == "open":
                    runner = open_loop(world, strategy, args.rate, args.warmup, args.duration, rng)
                else:
                    runner = closed_loop(
                        world, strategy, args.concurrency, args.warmup, args.duration
                    )
                outcomes, start, end = await runner
                stats = summarise(name, loop, outcomes, start, end, before, await successes(world))
                results.append(stats)
                print(json.dumps(stats.__dict__), flush=True)
    finally:
        if world is not None:
            await stop_world(world)
        nats_server.stop()
        redis_server.stop()
    print(f"logs: {workdir}", file=sys.stderr)
    return results


def table(results: list[Stats]) -> str:
    lines = [
        "| strategy | loop | requests | errors | p50 ms | p90 ms | p99 ms | max ms | goodput/s"
        " | makespan/s | shares big/mid/small/slow |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in results:
        shares = "/".join(f"{s.shares.get(b, 0):.2f}" for b in FLEET)
        lines.append(
            f"| {s.strategy} | {s.loop} | {s.requests} | {s.errors} | {s.p50_ms} | {s.p90_ms} | "
            f"{s.p99_ms} | {s.max_ms} | {s.goodput_rps} | {s.makespan_rps} | {shares} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=float, default=40.0, help="open loop arrivals per second")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds first")
    parser.add_argument("--concurrency", type=int, default=48, help="closed loop clients (0: skip)")
    parser.add_argument(
        "--strategies",
        default="round_robin,least_requests,least_requests_x4,score,score_ingress,score_p2c",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))


if __name__ == "__main__":
    main()
