"""Event pipeline throughput: one worker process vs a raw nats-py pull loop, side by side.

    uv run python bench/pipeline_throughput.py [--events 20000] [--rounds 2] [--slots 256]

Starts a private nats-server (the machine's, Debian 2.9 here; HYPERINFER_TEST_NATS_BIN
overrides), then alternates two consumers over the same publisher, each in its own
process:

- raw:      nats-py ``pull_subscribe`` + ``fetch(100)`` + ``msg.ack()`` per message;
- pipeline: the event-pipeline ``WorkerPool`` over ``JetStreamQueue`` (no_wait batch
            pulls sized to free slots, envelope decoding and registry validation,
            handler dispatch, explicit ack, metrics) with a no-op handler.

Both consume work-queue streams built from ``infra/nats/streams.json`` (dedupe window
on, every message published with ``Nats-Msg-Id``). Events/s = events / (time from the
first publish until the stream is empty, i.e. every message acked).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
import orjson
from hyperinfer.contracts import Envelope, Priority, names, utc_now
from hyperinfer.contracts.jobs import v1 as jobs_v1
from hyperinfer.runtime.jetstream import ensure_streams, load_stream_configs
from hyperinfer.runtime.testing.servers import NatsServer

SUBJECT = names.job_subject(Priority.NORMAL, jobs_v1.TYPE_AUDIT_RECORD)
STREAM = names.jobs_stream(Priority.NORMAL)


def payloads(count: int) -> list[tuple[str, bytes]]:
    out = []
    for n in range(count):
        data = jobs_v1.AuditRecord(
            actor="bench", action="noop", target_type="n", target_id=str(n), at=utc_now()
        )
        env = Envelope[Any](type=jobs_v1.TYPE_AUDIT_RECORD, source="bench", data=data)
        out.append((env.id, orjson.dumps(env.model_dump(mode="json"))))
    return out


async def reset_streams(url: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    for info in await js.streams_info():
        await js.delete_stream(info.config.name)
    await ensure_streams(js, load_stream_configs("event-pipeline"))
    await nc.close()


async def publish_and_wait(url: str, events: list[tuple[str, bytes]]) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    started = time.perf_counter()
    for i in range(0, len(events), 500):
        chunk = events[i : i + 500]
        await asyncio.gather(
            *(js.publish(SUBJECT, raw, headers={"Nats-Msg-Id": mid}) for mid, raw in chunk)
        )
    while (await js.stream_info(STREAM)).state.messages > 0:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    await nc.close()
    return elapsed


# --- the two consumers (each runs in its own process) ---------------------------------
async def raw_consumer(url: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(SUBJECT, durable="raw", stream=STREAM)
    print("ready", flush=True)
    while True:
        try:
            msgs = await sub.fetch(100, timeout=1)
        except nats.errors.TimeoutError:
            continue
        for msg in msgs:
            await msg.ack()


async def pipeline_consumer(url: str, slots: int) -> None:
    from hyperinfer.event_pipeline.adapters.jetstream_queue import (
        JetStreamDeadLetters,
        JetStreamQueue,
    )
    from hyperinfer.event_pipeline.dlq import DeadLetterer
    from hyperinfer.event_pipeline.domain import Backoff, SlotScheduler
    from hyperinfer.event_pipeline.metrics import PipelineMetrics
    from hyperinfer.event_pipeline.worker import NoLedger, Registration, WorkerConfig, WorkerPool
    from prometheus_client import CollectorRegistry

    nc = await nats.connect(url)
    queue = JetStreamQueue(
        nc, load_stream_configs("event-pipeline"), consumer="bench", ack_wait_s=30, max_attempts=5
    )
    await queue.setup()

    async def noop(env: Any, ctx: Any) -> None:
        return None

    weights = {Priority.HIGH: 4, Priority.NORMAL: 2, Priority.LOW: 1}
    worker = WorkerPool(
        queue,
        {jobs_v1.TYPE_AUDIT_RECORD: Registration(noop, once=False)},
        config=WorkerConfig(slots=slots, max_attempts=5, progress_interval_s=10),
        scheduler=SlotScheduler(weights, 2.0),
        backoff=Backoff(1, 60),
        ledger=NoLedger(),
        dead_letters=DeadLetterer(JetStreamDeadLetters(nc)),
        metrics=PipelineMetrics(CollectorRegistry()),
    )
    await worker.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


def start_consumer(kind: str, url: str, slots: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--consume", kind, "--url", url, "--slots", str(slots)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


async def one_run(kind: str, url: str, events: list[tuple[str, bytes]], slots: int) -> float:
    await reset_streams(url)
    proc = start_consumer(kind, url, slots)
    try:
        elapsed = await publish_and_wait(url, events)
    finally:
        proc.kill()
        proc.wait()
    return len(events) / elapsed


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp))
        server.start()
        try:
            print(f"nats-server: {server.version()}; events per run: {args.events}")
            results: dict[str, list[float]] = {"raw": [], "pipeline": []}
            for round_no in range(args.rounds):
                for kind in ("raw", "pipeline"):
                    rate = await one_run(kind, server.url, payloads(args.events), args.slots)
                    results[kind].append(rate)
                    print(f"round {round_no + 1} {kind:8s} {rate:8.0f} events/s", flush=True)
        finally:
            server.stop()
    raw = statistics.median(results["raw"])
    pipe = statistics.median(results["pipeline"])
    print(f"median raw      {raw:8.0f} events/s")
    print(f"median pipeline {pipe:8.0f} events/s")
    print(f"pipeline / raw  {pipe / raw:8.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--slots", type=int, default=256)
    parser.add_argument("--consume", choices=["raw", "pipeline"])
    parser.add_argument("--url", default="")
    args = parser.parse_args()
    if args.consume == "raw":
        asyncio.run(raw_consumer(args.url))
    elif args.consume == "pipeline":
        asyncio.run(pipeline_consumer(args.url, args.slots))
    else:
        asyncio.run(main(args))
