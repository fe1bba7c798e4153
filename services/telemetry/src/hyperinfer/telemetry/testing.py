"""Usage events as producers write them, for tests and benchmarks (no I/O at import).

``make_usage`` builds a valid ``UsageRecorded``; ``entry_fields`` is the stream entry a
producer XADDs (field ``envelope`` + optional ``traceparent``); ``produce`` writes many
entries with pipelined XADDs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
import redis.asyncio as aioredis
from hyperinfer.contracts import Envelope, names, utc_now
from hyperinfer.contracts.usage.v1 import EVENT_RECORDED, UsageRecorded


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
