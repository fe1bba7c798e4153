"""Accuracy under contention: 4 processes x 50 concurrent clients on one key.

The limit N is what the limit allows over the window the clients hammered: the
burst (capacity = the per-minute limit) plus the emission intervals elapsed, on
Redis server time, between the first admission and the end of the window. Admitted
must be <= N at every admission (checked along the way, not only at the end) and
>= N - 1 at the end (one emission may fall between a client's last attempt and the
window's end: the last decision any client got). For TPM the lower bound is N minus
the largest request: a bucket with fewer free tokens than any request asks for
stays unused.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hyperinfer.client.quota import gcra_params

from .conftest import TRANSPORTS, key_quota, make_snapshot

HAMMER = Path(__file__).with_name("hammer.py")
PROCESSES, CLIENTS = 4, 50
pytestmark = pytest.mark.parametrize("transport", TRANSPORTS)


def hammer(
    url: str, limit_kw: dict[str, int], sizes: list[int], window_s: float, transport: str
) -> dict[str, Any]:
    """Run the load; return every admission and the server time of the last decision."""
    snapshot = make_snapshot([key_quota(**limit_kw)]).model_dump(mode="json")
    cfg = {
        "transport": transport,
        "url": url,
        "snapshot": snapshot,
        "team": "t1",
        "key": "k1",
        "clients": CLIENTS,
        "sizes": sizes,
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(HAMMER), json.dumps({**cfg, "seed": i})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(PROCESSES)
    ]
    for proc in procs:  # every process imported and connected
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
    start_at = time.time() + 0.5
    window = json.dumps({"start_at": start_at, "end_at": start_at + window_s}).encode()
    outputs = [p.communicate(window + b"\n", timeout=120) for p in procs]
    results = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()[-2000:]
        results.append(json.loads(out))
    admitted = sorted(tuple(a) for r in results for a in r["admitted"])
    return {
        "admitted": admitted,
        "denied": sum(r["denied"] for r in results),
        "end_us": max(r["last_us"] for r in results),
    }


def allowed_by(limit: int, first_us: int, at_us: int) -> Fraction:
    """Units a full bucket of ``limit`` per minute allows from ``first_us`` to ``at_us``."""
    rate, period, capacity = gcra_params(limit)
    return capacity + Fraction(rate * (at_us - first_us), period)


def test_rpm_is_exact_across_processes(redis_url: str, transport: str) -> None:
    limit = 1200  # one every 50 ms after a burst of 1200
    run = hammer(redis_url, {"rpm": limit}, [1], window_s=2.5, transport=transport)
    admitted = run["admitted"]
    first = admitted[0][0]
    for count, (at, _) in enumerate(admitted, start=1):
        assert count <= allowed_by(limit, first, at), f"admission {count} at +{at - first} us"
    n = int(allowed_by(limit, first, run["end_us"]))
    print(f"rpm: N={n} admitted={len(admitted)} denied={run['denied']}")
    assert n - 1 <= len(admitted) <= n
    assert run["denied"] > len(admitted)  # demand exceeded the limit all along


def test_rpm_burst_inside_one_emission_interval(redis_url: str, transport: str) -> None:
    limit = 30  # one every 2 s: a 1.5 s window sees exactly the burst
    run = hammer(redis_url, {"rpm": limit}, [1], window_s=1.5, transport=transport)
    print(f"rpm burst: N={limit} admitted={len(run['admitted'])} denied={run['denied']}")
    assert limit - 1 <= len(run["admitted"]) <= limit


def test_tpm_is_exact_across_processes_with_varied_sizes(redis_url: str, transport: str) -> None:
    limit = 60_000  # 1000 tokens/s after a burst of 60000
    sizes = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89]
    run = hammer(redis_url, {"tpm": limit}, sizes, window_s=2.5, transport=transport)
    admitted = run["admitted"]
    first, total = admitted[0][0], 0
    for at, tokens in admitted:
        total += tokens
        assert total <= allowed_by(limit, first, at), f"{total} tokens at +{at - first} us"
    n = int(allowed_by(limit, first, run["end_us"]))
    print(f"tpm: N={n} admitted tokens={total} requests={len(admitted)} denied={run['denied']}")
    assert n - max(sizes) <= total <= n
    assert len({t for _, t in admitted}) == len(sizes)
