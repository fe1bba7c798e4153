"""Data-plane benchmark: direct vs HyperInfer ingress vs LiteLLM proxy, side by side, one run.

    scripts/bench dataplane [--duration 10] [--streams 512] [--skip-litellm] [--json out.json]
                            [--compare-python OTHER_CHECKOUT/.venv/bin/python]

Everything runs on this machine against ONE fake upstream
(``hyperinfer.client.testing.fake_upstream``, OpenAI wire format, no recording):

- **direct**: the load generator → the fake upstream;
- **hyperinfer**: → the ingress (one process; auth + quota reserve/settle + usage events
  on: the key, team quota and price of ``dataplane_seed``) → the fake upstream;
- **floor**: → a bare proxy on the same server stack making one Redis round trip and the
  upstream call, nothing else (``dataplane_floor``): what any Python proxy costs here;
- **litellm**: → the LiteLLM proxy (one worker, master-key auth, no database) → the fake;
- **before** (with ``--compare-python``): the ingress of another checkout (its own venv),
  configured the same: before/after numbers from one run.

Pinning on 2 cores: the proxy under test (ingress, floor or LiteLLM) alone on core 0;
the fake upstream, Redis, NATS and the load generator on core 1 (``taskset``; Redis and
NATS by affinity once started). All proxies run during the whole benchmark; only the one
under test gets traffic, and the others are paused (SIGSTOP) meanwhile, so their own
timers do not land in its latency.

Measured:

1. added latency at concurrency 1: ``wrk -c1``, p50/p99 of each path, in ``--rounds``
   interleaved rounds (the median round is reported: other work on the machine comes and
   goes); added = proxy - direct; and the proxy's CPU time per request;
2. non-stream throughput per proxy process: ``wrk -c64`` (req/s), peak RSS, CPU/request;
3. ``--streams`` concurrent SSE streams opened at once (raw-socket asyncio client), the
   upstream sending a frame every 50 ms: all complete? time to first byte, the largest gap
   between two events of a stream (a stall shows here), peak RSS;
4. thick-client overhead: ``HyperInferClient.chat`` in-process vs the bare provider call,
   concurrency 1, p50 difference (``dataplane_thick``), on the proxy core.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dataplane_litellm import MASTER_KEY, litellm_proc
from dataplane_load import run_streams, run_wrk
from dataplane_procs import CpuMeter, Proc, RssSampler, paused, pin, pinned
from dataplane_seed import ALIAS, API_KEY, UPSTREAM_MODEL, seed
from hyperinfer.runtime.testing.servers import NatsServer, RedisServer, free_port

PROXY_CORE, LOAD_CORE = ("0", "1") if (os.cpu_count() or 1) >= 2 else ("", "")
STREAM_WORDS = 40
STREAM_FRAME_S = 0.05


def body(model: str, stream: bool = False) -> str:
    messages = [{"role": "user", "content": "hello benchmark, say something"}]
    return json.dumps({"model": model, "messages": messages, "stream": stream, "max_tokens": 64})


def fake_behaviour(url: str, **changes: Any) -> None:
    request = urllib.request.Request(
        f"{url}/_fake/behaviour",
        data=json.dumps(changes).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5):
        pass


@contextlib.contextmanager
def system(
    workdir: Path, with_litellm: bool, compare: Path | None = None
) -> Iterator[dict[str, Any]]:
    """Redis, NATS, the fake upstream, the ingress (and LiteLLM), all started and seeded."""
    redis, nats = RedisServer(workdir / "redis"), NatsServer(workdir / "nats")
    procs: list[Proc] = []
    try:
        redis.start()
        nats.start()
        for server in (redis, nats):
            assert server.proc is not None
            pin(server.proc.pid, LOAD_CORE)
        fake_port, ingress_port, litellm_port = free_port(), free_port(), free_port()
        floor_port = free_port()
        fake_url = f"http://127.0.0.1:{fake_port}"
        fake_argv = [sys.executable, "-m", "hyperinfer.client.testing.fake_upstream"]
        fake_argv += ["--port", str(fake_port), "--no-record", "--model", UPSTREAM_MODEL]
        fake = Proc("fake-upstream", pinned(LOAD_CORE, fake_argv), workdir / "fake.log")
        procs.append(fake.start())
        fake.wait_http(f"{fake_url}/v1/models")
        seed(redis.url, fake_url)
        env = {
            "HYPERINFER_REDIS_URL": redis.url,
            "HYPERINFER_NATS_URL": nats.url,
            "HYPERINFER_INGRESS_HTTP_PORT": str(ingress_port),
            "HYPERINFER_INGRESS_LOG_LEVEL": "WARNING",
            "HYPERINFER_LOG_LEVEL": "WARNING",
            "HYPERINFER_CREDENTIALS_KEY": "bench-credentials-key-0123456789",
            # the quota service is not part of the benchmark: budgets are enforced by the
            # same reservation script, but nobody is there to mark them "loaded"
            "HYPERINFER_INGRESS_REQUIRE_BUDGETS_LOADED": "false",
        }
        ingress_argv = pinned(PROXY_CORE, [sys.executable, "-m", "hyperinfer.ingress"])
        ingress = Proc("ingress", ingress_argv, workdir / "ingress.log", env)
        procs.append(ingress.start())
        ingress.wait_http(f"http://127.0.0.1:{ingress_port}/health/ready")
        floor_argv = [sys.executable, str(Path(__file__).with_name("dataplane_floor.py"))]
        floor_argv += ["--port", str(floor_port), "--upstream", f"{fake_url}/v1"]
        floor_argv += ["--redis", redis.url]
        floor = Proc("floor", pinned(PROXY_CORE, floor_argv), workdir / "floor.log")
        procs.append(floor.start())
        floor_url = f"http://127.0.0.1:{floor_port}/v1/chat/completions"
        floor.wait_http(floor_url, method="POST")
        targets: dict[str, Any] = {
            "direct": (f"{fake_url}/v1/chat/completions", "fake", UPSTREAM_MODEL, fake),
            "hyperinfer": (
                f"http://127.0.0.1:{ingress_port}/v1/chat/completions",
                API_KEY,
                ALIAS,
                ingress,
            ),
            "floor": (floor_url, "none", UPSTREAM_MODEL, floor),
        }
        if compare is not None:
            before_port = free_port()
            before_env = {**env, "HYPERINFER_INGRESS_HTTP_PORT": str(before_port)}
            before_argv = pinned(PROXY_CORE, [str(compare), "-m", "hyperinfer.ingress"])
            before = Proc("before", before_argv, workdir / "before.log", before_env)
            before.cwd = compare.parents[2]  # OTHER_CHECKOUT/.venv/bin/python
            procs.append(before.start())
            before.wait_http(f"http://127.0.0.1:{before_port}/health/ready")
            url = f"http://127.0.0.1:{before_port}/v1/chat/completions"
            targets["before"] = (url, API_KEY, ALIAS, before)
        if with_litellm:
            litellm = litellm_proc(workdir, litellm_port, fake_url, UPSTREAM_MODEL, PROXY_CORE)
            procs.append(litellm.start())
            litellm.wait_http(f"http://127.0.0.1:{litellm_port}/health/liveliness", 180)
            targets["litellm"] = (
                f"http://127.0.0.1:{litellm_port}/v1/chat/completions",
                MASTER_KEY,
                "bench",
                litellm,
            )
        yield {"targets": targets, "fake_url": fake_url, "redis_url": redis.url}
    finally:
        for proc in reversed(procs):
            proc.stop()
        nats.stop()
        redis.stop()


def measure(env: dict[str, Any], duration_s: float, streams: int, rounds: int) -> dict[str, Any]:
    targets = env["targets"]
    results: dict[str, Any] = {"latency_c1": {}, "throughput_c64": {}, "streams": {}}
    for url, key, model, _proc in targets.values():  # warm every path first
        run_wrk(url, key, body(model), 4, 2, LOAD_CORE)
    results["latency_c1"] = latency_rounds(targets, duration_s, rounds)
    for name, (url, key, model, proc) in targets.items():
        print(f"throughput c=64: {name}", file=sys.stderr)
        with others_paused(targets, name), RssSampler(proc.pid) as rss, CpuMeter(proc.pid) as cpu:
            result = asdict(run_wrk(url, key, body(model), 64, duration_s, LOAD_CORE))
        results["throughput_c64"][name] = {
            **result,
            "peak_rss_mib": round(rss.peak, 1),
            "cpu_us_per_request": round(cpu.seconds * 1e6 / max(result["requests"], 1), 1),
        }
    fake_behaviour(
        env["fake_url"],
        answer=" ".join(f"w{i}" for i in range(STREAM_WORDS)),
        per_token_s=STREAM_FRAME_S,
    )
    for name, (url, key, model, proc) in targets.items():
        if name == "floor":
            continue  # the floor proxy does not stream
        print(f"{streams} streams: {name}", file=sys.stderr)
        with others_paused(targets, name), RssSampler(proc.pid) as rss:
            result = asdict(run_streams(url, key, body(model, stream=True), streams))
        results["streams"][name] = {**result, "peak_rss_mib": round(rss.peak, 1)}
    fake_behaviour(env["fake_url"], answer=None, per_token_s=0.0)
    return results


def others_paused(targets: dict[str, Any], name: str) -> Any:
    """Every proxy but ``name`` stopped (the direct path's fake upstream is never paused)."""
    return paused([t[3] for other, t in targets.items() if other not in (name, "direct")])


def latency_rounds(targets: dict[str, Any], duration_s: float, rounds: int) -> dict[str, Any]:
    """c=1 on every path, interleaved round by round; each path's median round."""
    per_round: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    seconds = max(2, round(duration_s / rounds))  # wrk takes whole seconds
    for number in range(1, rounds + 1):
        for name, (url, key, model, proc) in targets.items():
            print(f"latency c=1: {name} (round {number}/{rounds})", file=sys.stderr)
            with others_paused(targets, name), CpuMeter(proc.pid) as cpu:
                result = asdict(run_wrk(url, key, body(model), 1, seconds, LOAD_CORE))
            result["cpu_us_per_request"] = round(cpu.seconds * 1e6 / max(result["requests"], 1), 1)
            per_round[name].append(result)
    chosen = {}
    for name, runs in per_round.items():
        ordered = sorted(runs, key=lambda r: r["p50_us"])
        chosen[name] = {**ordered[len(ordered) // 2], "rounds_p50_us": [r["p50_us"] for r in runs]}
    return chosen


def thick_client(env: dict[str, Any], requests: int) -> dict[str, Any] | None:
    try:
        from dataplane_thick import measure_thick_client
    except ImportError as exc:  # the thick client is not in this checkout
        return {"error": f"not measured: {exc}"}
    before = os.sched_getaffinity(0)
    pin(0, PROXY_CORE)  # the in-process client gets the proxy core, as a proxy would
    try:
        return measure_thick_client(env["redis_url"], API_KEY, ALIAS, requests)
    except Exception as exc:  # report it beside the other numbers instead of losing them
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        os.sched_setaffinity(0, before)


def report(results: dict[str, Any]) -> str:
    lat, thr, st = results["latency_c1"], results["throughput_c64"], results["streams"]
    direct = lat["direct"]
    lines = [
        "| path | c=1 p50 | c=1 p99 | added p50 | added p99 | CPU/req c=1 | req/s c=64 "
        "| CPU/req c=64 | peak RSS c=64 | streams ok | TTFB p50/p99 | max gap p99/max "
        "| peak RSS streams |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in lat:
        p50, p99 = lat[name]["p50_us"], lat[name]["p99_us"]
        added = "—" if name == "direct" else f"{(p50 - direct['p50_us']) / 1000:.2f} ms"
        added99 = "—" if name == "direct" else f"{(p99 - direct['p99_us']) / 1000:.2f} ms"
        s = st.get(name)
        stream_cells = (
            f"{s['completed']}/{s['streams']} | {s['ttfb_p50_ms']:.0f}/{s['ttfb_p99_ms']:.0f} ms "
            f"| {s['max_gap_p99_ms']:.0f}/{s['max_gap_ms']:.0f} ms | {s['peak_rss_mib']:.0f} MiB"
            if s
            else "— | — | — | —"
        )
        lines.append(
            f"| {name} | {p50 / 1000:.2f} ms | {p99 / 1000:.2f} ms | {added} | {added99} "
            f"| {lat[name]['cpu_us_per_request']:.0f} µs | {thr[name]['rps']:.0f} "
            f"| {thr[name]['cpu_us_per_request']:.0f} µs | {thr[name]['peak_rss_mib']:.0f} MiB "
            f"| {stream_cells} |"
        )
    lines.append("")
    lines.append(
        "c=1 p50 per round (µs): " + "; ".join(f"{n} {lat[n]['rounds_p50_us']}" for n in lat)
    )
    if "litellm" in lat:
        hi, ll = "hyperinfer", "litellm"
        added_hi = lat[hi]["p50_us"] - direct["p50_us"]
        added_ll = lat[ll]["p50_us"] - direct["p50_us"]
        lines.append("")
        lines.append(
            f"Ratios HyperInfer : LiteLLM — added p50 latency {added_hi / max(added_ll, 1):.3f}, "
            f"req/s {thr[hi]['rps'] / max(thr[ll]['rps'], 1):.1f}x, "
            f"RSS under load {thr[hi]['peak_rss_mib'] / max(thr[ll]['peak_rss_mib'], 1):.2f}"
        )
    if "before" in lat:
        added_now = lat["hyperinfer"]["p50_us"] - direct["p50_us"]
        added_before = lat["before"]["p50_us"] - direct["p50_us"]
        lines.append(
            f"HyperInfer now : before — added p50 latency {added_now / max(added_before, 1):.2f}, "
            f"req/s {thr['hyperinfer']['rps'] / max(thr['before']['rps'], 1):.1f}x, "
            f"CPU/request c=64 {thr['hyperinfer']['cpu_us_per_request']:.0f} vs "
            f"{thr['before']['cpu_us_per_request']:.0f} µs"
        )
    thick = results.get("thick_client")
    if thick:
        lines.append("")
        lines.append(f"Thick client: {json.dumps(thick)}")
    lines.append(f"Load average (1 min) before/after: {results.get('load_average')}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--streams", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved c=1 rounds")
    parser.add_argument("--thick-requests", type=int, default=3000)
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--compare-python",
        type=Path,
        help="the Python of another checkout's venv: its ingress runs too, as 'before'",
    )
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="hi-bench-") as tmp,
        system(Path(tmp), not args.skip_litellm, args.compare_python) as env,
    ):
        load_before = os.getloadavg()[0]
        results = measure(env, args.duration, args.streams, args.rounds)
        with paused([t[3] for name, t in env["targets"].items() if name != "direct"]):
            results["thick_client"] = thick_client(env, args.thick_requests)
        results["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        results["pinning"] = {"proxy_core": PROXY_CORE, "load_core": LOAD_CORE}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(report(results))


if __name__ == "__main__":
    main()
