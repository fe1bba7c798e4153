"""Load generators for the data-plane benchmark (helper of ``bench/dataplane.py``).

- :func:`run_wrk`: non-streaming requests with ``wrk`` (C, one thread, keep-alive); a Lua
  ``done`` hook prints exact latency percentiles in microseconds.
- :func:`run_streams`: N concurrent SSE streams from one asyncio process on raw sockets
  (no HTTP library: the client must not be the bottleneck), timing every event.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from dataplane_procs import pinned

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
wrk.body = '{body}'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'HI_JSON {{"p50":%d,"p90":%d,"p99":%d,"mean":%.1f,"requests":%d,' ..
    '"socket_errors":%d,"non2xx":%d,"duration_us":%d}}\\n',
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean,
    summary.requests, e.connect + e.read + e.write + e.timeout, e.status, summary.duration))
end
"""


@dataclass
class WrkResult:
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    requests: int
    errors: int
    rps: float


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
        path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed and could not be installed from Debian")
    return path


def run_wrk(
    url: str, key: str, body: str, connections: int, duration_s: float, cores: str
) -> WrkResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT.format(key=key, body=body))
    argv = pinned(cores, [ensure_wrk(), "-t1", f"-c{connections}", f"-d{duration_s:g}s"])
    argv += ["--timeout", "10s", "-s", script.name, url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    Path(script.name).unlink()
    line = next(ln for ln in out.splitlines() if ln.startswith("HI_JSON "))
    data = json.loads(line[len("HI_JSON ") :])
    return WrkResult(
        p50_us=data["p50"],
        p90_us=data["p90"],
        p99_us=data["p99"],
        mean_us=data["mean"],
        requests=data["requests"],
        errors=data["socket_errors"] + data["non2xx"],
        rps=data["requests"] / (data["duration_us"] / 1e6),
    )


@dataclass
class StreamStats:
    ttfb_s: float | None = None
    events: int = 0
    max_gap_s: float = 0.0
    done: bool = False
    error: str | None = None


@dataclass
class StreamsResult:
    streams: int
    completed: int
    failed: int
    ttfb_p50_ms: float
    ttfb_p99_ms: float
    max_gap_p99_ms: float
    max_gap_ms: float
    events_per_stream: float
    wall_s: float
    errors: list[str] = field(default_factory=list)


async def _one_stream(url: str, key: str, body: bytes, started: float) -> StreamStats:
    stats = StreamStats()
    parts = urlsplit(url)
    try:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    except OSError as exc:
        stats.error = f"connect: {exc}"
        return stats
    head = (
        f"POST {parts.path} HTTP/1.1\r\nhost: {parts.netloc}\r\n"
        f"authorization: Bearer {key}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    writer.write(head + body)
    try:
        status_line = await reader.readline()
        if b" 200 " not in status_line:
            stats.error = status_line.decode(errors="replace").strip()
            return stats
        last = None
        buffer = b""
        while chunk := await reader.read(65536):
            now = time.monotonic()
            count = chunk.count(b"data: ")
            if count:
                if stats.ttfb_s is None:
                    stats.ttfb_s = now - started
                if last is not None:
                    stats.max_gap_s = max(stats.max_gap_s, now - last)
                last = now
                stats.events += count
            buffer = (buffer + chunk)[-64:]
            if b"data: [DONE]" in buffer:
                stats.done = True
    except (OSError, asyncio.IncompleteReadError) as exc:
        stats.error = f"read: {exc}"
    finally:
        writer.close()
    return stats


async def _streams(url: str, key: str, body: bytes, n: int) -> tuple[list[StreamStats], float]:
    started = time.monotonic()
    results = await asyncio.gather(*(_one_stream(url, key, body, started) for _ in range(n)))
    return list(results), time.monotonic() - started


def run_streams(url: str, key: str, body: str, n: int) -> StreamsResult:
    """``n`` streams opened at once; ``events`` counts SSE data events per stream."""
    results, wall = asyncio.run(_streams(url, key, body.encode(), n))
    ok = [r for r in results if r.done and r.error is None]
    ttfb = sorted(r.ttfb_s for r in ok if r.ttfb_s is not None) or [0.0]
    gaps = sorted(r.max_gap_s for r in ok) or [0.0]
    return StreamsResult(
        streams=n,
        completed=len(ok),
        failed=n - len(ok),
        ttfb_p50_ms=statistics.median(ttfb) * 1000,
        ttfb_p99_ms=ttfb[min(len(ttfb) - 1, int(len(ttfb) * 0.99))] * 1000,
        max_gap_p99_ms=gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))] * 1000,
        max_gap_ms=gaps[-1] * 1000,
        events_per_stream=statistics.mean([r.events for r in ok]) if ok else 0.0,
        wall_s=wall,
        errors=sorted({r.error or "no [DONE]" for r in results if r not in ok})[:5],
    )
