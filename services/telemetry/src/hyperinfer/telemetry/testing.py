"""Usage events as producers write them, for tests and benchmarks (no I/O at import).

``make_usage`` builds a valid ``UsageRecorded``; ``entry_fields`` is the stream entry a
producer XADDs (field ``envelope`` + optional ``traceparent``); ``produce`` writes many
entries with pipelined XADDs; ``TelemetryProcess`` runs the real service.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis
from hyperinfer.contracts import Envelope, names, utc_now
from hyperinfer.contracts.usage.v1 import EVENT_RECORDED, UsageRecorded
from prometheus_client.parser import text_string_to_metric_families


def make_usage(request_id: str, **fields: Any) -> UsageRecorded:
    """A usage event with plausible defaults; any field may be overridden."""
    now: datetime = fields.pop("at", None) or utc_now()
    values: dict[str, Any] = {
        "request_id": request_id,
        "team_id": "team-a",
        "key_id": "key-a1",
        "alias": "chat-small",
        "model": "gpt-4o-mini",
        "backend_id": "openai-main",
        "provider": "openai",
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "total_tokens": 150,
        "cost_micros": 1200,
        "latency_ms": 420.0,
        "ttft_ms": 80.0,
        "stream": True,
        "started_at": now,
        "finished_at": now,
    }
    values.update(fields)
    if "total_tokens" not in fields:
        values["total_tokens"] = values["prompt_tokens"] + values["completion_tokens"]
    return UsageRecorded(**values)


def envelope_json(usage: UsageRecorded, *, traceparent: str | None = None, **env: Any) -> bytes:
    """The JSON of the ``usage.recorded`` envelope carrying ``usage``."""
    envelope = Envelope[UsageRecorded](
        type=env.pop("type", EVENT_RECORDED),
        source=env.pop("source", "ingress"),
        tenant=usage.team_id,
        traceparent=traceparent,
        data=usage,
        **env,
    )
    return orjson.dumps(envelope.model_dump(mode="json"))


def entry_fields(
    usage: UsageRecorded, *, traceparent: str | None = None, in_envelope: bool = False
) -> dict[str | bytes, bytes]:
    """One stream entry: ``traceparent`` as a field (or inside the envelope)."""
    fields: dict[str | bytes, bytes] = {
        names.USAGE_STREAM_FIELD: envelope_json(
            usage, traceparent=traceparent if in_envelope else None
        )
    }
    if traceparent and not in_envelope:
        fields["traceparent"] = traceparent.encode()
    return fields


async def produce(
    redis: aioredis.Redis,
    entries: Iterable[dict[str | bytes, bytes]],
    *,
    stream: str = names.USAGE_STREAM,
    chunk: int = 500,
) -> list[bytes]:
    """XADD every entry, ``chunk`` per pipelined round trip; the stream ids, in order."""
    ids: list[bytes] = []
    batch: list[dict[str | bytes, bytes]] = []
    for fields in entries:
        batch.append(fields)
        if len(batch) >= chunk:
            ids += await _xadd_all(redis, stream, batch)
            batch = []
    if batch:
        ids += await _xadd_all(redis, stream, batch)
    return ids


async def _xadd_all(
    redis: aioredis.Redis, stream: str, batch: Sequence[dict[str | bytes, bytes]]
) -> list[bytes]:
    async with redis.pipeline(transaction=False) as pipe:
        for fields in batch:
            pipe.xadd(stream, dict(fields))  # type: ignore[arg-type]
        return list(await pipe.execute())


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 15.0, what: str = "condition"
) -> None:
    """Poll ``check`` until it holds; ``AssertionError`` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s}s")
        await asyncio.sleep(0.05)


class TelemetryProcess:
    """A real ``python -m hyperinfer.telemetry`` process for end-to-end tests and benches.

    ``env`` adds to a copy of this environment without any ``HYPERINFER_*`` variable;
    stderr (the JSON log) goes to ``log_path``.
    """

    def __init__(self, port: int, env: Mapping[str, str], log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        self.env = dict(env)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("HYPERINFER_")}
        clean.update(env)
        clean["HYPERINFER_TELEMETRY_HTTP_PORT"] = str(port)
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hyperinfer.telemetry"],
                env=clean,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self, timeout_s: float = 30.0) -> None:
        """Wait for ``/health/ready`` 200; ``AssertionError`` with the log tail otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"telemetry exited: {self.log()[-3000:]}")
            try:
                if httpx.get(self.url + "/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"telemetry not ready after {timeout_s}s: {self.log()[-3000:]}")

    def metric(self, name: str, **labels: str) -> float:
        """One sample of ``/metrics`` (0 when absent)."""
        text = httpx.get(self.url + "/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0

    def stop(self, timeout_s: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
