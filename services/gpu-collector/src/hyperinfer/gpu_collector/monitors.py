"""The two periodic loops of the collector: GPU polls and engine scrapes.

Each keeps its latest results for ``/health/detailed`` and ``/metrics`` and hands every
report to ``publish``. A failed publish is logged and counted; the loop goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from hyperinfer.client.lifecycle import raise_if_cancelled
from hyperinfer.contracts import utc_now
from hyperinfer.contracts.backend.v1 import BackendStateReported
from hyperinfer.contracts.gpu.v1 import GpuMetricsReported
from hyperinfer.gpu_collector.engines import Counters, ReportContext, ScrapeTarget
from hyperinfer.gpu_collector.handlers import collect_gpu_report, scrape_backend
from hyperinfer.gpu_collector.ports import EngineClient, GpuSource
from pydantic import BaseModel

log = logging.getLogger(__name__)
ReportT = TypeVar("ReportT", bound=BaseModel)
Publish = Callable[[ReportT], Awaitable[None]]


async def run_every(interval_s: float, step: Callable[[], Awaitable[Any]], what: str) -> None:
    """Call ``step`` every ``interval_s`` (start to start) until cancelled; never die of it."""
    while True:
        started = time.monotonic()
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            raise_if_cancelled()  # a cancel a library turned into an error
            log.exception("%s failed; retrying next round", what)
        await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))


class GpuMonitor:
    """Polls a ``GpuSource`` off the event loop and publishes ``GpuMetricsReported``."""

    def __init__(
        self,
        source: GpuSource,
        node: str,
        interval_s: float,
        publish: Publish[GpuMetricsReported],
    ) -> None:
        self._source = source
        self._node = node
        self.interval_s = interval_s
        self._publish = publish
        self.latest: GpuMetricsReported | None = None
        self.polls = 0
        self.publish_failures = 0

    async def poll_once(self) -> GpuMetricsReported:
        report = await asyncio.to_thread(
            collect_gpu_report, self._source, self._node, self.interval_s
        )
        if self.latest is None or self.latest.status != report.status:
            log.info("gpu status %s", report.status, extra={"detail": report.detail})
        self.latest = report
        self.polls += 1
        if not await _published(self._publish, report):
            self.publish_failures += 1
        return report

    async def run(self) -> None:
        await run_every(self.interval_s, self.poll_once, "gpu poll")

    async def close(self) -> None:
        await asyncio.to_thread(self._source.close)

    def status(self) -> dict[str, Any]:
        latest = self.latest
        return {
            "status": latest.status if latest else "starting",
            "detail": latest.detail if latest else None,
            "gpus": len(latest.gpus) if latest else 0,
            "driver_version": latest.driver_version if latest else None,
            "last_poll_at": latest.collected_at.isoformat() if latest else None,
            "polls": self.polls,
            "publish_failures": self.publish_failures,
            "interval_s": self.interval_s,
        }


class EngineMonitor:
    """Scrapes every engine this node is told about and publishes ``BackendStateReported``."""

    def __init__(
        self,
        client: EngineClient,
        targets: Callable[[], list[ScrapeTarget]],
        node: str,
        interval_s: float,
        publish: Publish[BackendStateReported],
    ) -> None:
        self._client = client
        self._targets = targets
        self._node = node
        self.interval_s = interval_s
        self._publish = publish
        self._previous: dict[str, Counters] = {}
        self.latest: dict[str, BackendStateReported] = {}
        self.rounds = 0
        self.publish_failures = 0

    async def scrape_once(self) -> list[BackendStateReported]:
        targets = self._targets()
        reporter = ReportContext(self._node, utc_now(), self.interval_s)
        results = await asyncio.gather(
            *(
                scrape_backend(self._client, t, self._previous.get(t.backend_id), reporter)
                for t in targets
            )
        )
        states = [
            self._keep(t, state, counters)
            for t, (state, counters) in zip(targets, results, strict=True)
        ]
        self._forget_except({t.backend_id for t in targets})
        await self._client.forget({t.base_url for t in targets})
        self.rounds += 1
        sent = await asyncio.gather(*(_published(self._publish, s) for s in states))
        self.publish_failures += sent.count(False)
        return states

    def _keep(
        self, target: ScrapeTarget, state: BackendStateReported, counters: Counters | None
    ) -> BackendStateReported:
        before = self.latest.get(target.backend_id)
        if before is None or before.healthy != state.healthy:
            level = logging.INFO if state.healthy else logging.WARNING
            log.log(
                level,
                "backend %s healthy=%s",
                target.backend_id,
                state.healthy,
                extra={"backend": target.backend_id, "detail": state.detail},
            )
        if counters is None:
            self._previous.pop(target.backend_id, None)
        else:
            self._previous[target.backend_id] = counters
        self.latest[target.backend_id] = state
        return state

    def _forget_except(self, keep: set[str]) -> None:
        for backend in [b for b in self.latest if b not in keep]:
            self.latest.pop(backend, None)
            self._previous.pop(backend, None)

    async def run(self) -> None:
        await run_every(self.interval_s, self.scrape_once, "engine scrape")

    def status(self) -> dict[str, Any]:
        return {
            backend: {
                "engine": state.engine,
                "healthy": state.healthy,
                "detail": state.detail,
                "observed_at": state.observed_at.isoformat(),
            }
            for backend, state in sorted(self.latest.items())
        }


async def _published(publish: Publish[ReportT], report: ReportT) -> bool:
    try:
        await publish(report)
    except Exception as exc:  # NATS down or reconnecting: the next round publishes again
        log.warning("publish failed: %s", f"{type(exc).__name__}: {exc}"[:300])
        return False
    return True
