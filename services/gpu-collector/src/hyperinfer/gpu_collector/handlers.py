"""Plain functions: one GPU poll → one report; one engine scrape → one backend state."""

from __future__ import annotations

import logging
import time

from hyperinfer.contracts import utc_now
from hyperinfer.contracts.backend.v1 import BackendStateReported
from hyperinfer.contracts.gpu.v1 import GpuMetricsReported
from hyperinfer.gpu_collector.engines import (
    Counters,
    ReportContext,
    ScrapeTarget,
    parse_prometheus_text,
    triton_state,
    vllm_state,
)
from hyperinfer.gpu_collector.errors import GpuReadFailed, GpuUnavailable, ScrapeFailed
from hyperinfer.gpu_collector.ports import EngineClient, GpuSource

log = logging.getLogger(__name__)


def collect_gpu_report(source: GpuSource, node: str, interval_s: float) -> GpuMetricsReported:
    """Blocking: poll ``source`` once. No GPU is a heartbeat, a failed poll an error report."""
    base = {"node": node, "collected_at": utc_now(), "interval_s": interval_s}
    try:
        reading = source.read()
    except GpuUnavailable as exc:
        return GpuMetricsReported(**base, status="no_gpu", detail=str(exc))
    except GpuReadFailed as exc:
        return GpuMetricsReported(**base, status="error", detail=str(exc))
    return GpuMetricsReported(
        **base,
        status="error" if reading.problems else "ok",
        detail="; ".join(reading.problems)[:500] or None,
        driver_version=reading.driver_version,
        cuda_version=reading.cuda_version,
        nvml_version=reading.nvml_version,
        gpus=reading.gpus,
    )


async def scrape_backend(
    client: EngineClient,
    target: ScrapeTarget,
    previous: Counters | None,
    reporter: ReportContext,
) -> tuple[BackendStateReported, Counters | None]:
    """Scrape one engine; an unreachable or broken one is ``healthy=false`` with the reason."""
    try:
        if target.engine == "vllm":
            return await _scrape_vllm(client, target, previous, reporter)
        return await _scrape_triton(client, target, previous, reporter)
    except ScrapeFailed as exc:
        return reporter.unreachable(target, str(exc)), None


async def _scrape_vllm(
    client: EngineClient, target: ScrapeTarget, previous: Counters | None, reporter: ReportContext
) -> tuple[BackendStateReported, Counters | None]:
    seen = await client.fetch_vllm(target)
    try:
        samples = parse_prometheus_text(seen.metrics_text)
    except ValueError as exc:
        return reporter.unreachable(
            target, f"unreadable metrics at {target.metrics_url}: {exc}"
        ), None
    state, counters = vllm_state(
        target, samples, seen.health_status, previous, time.monotonic(), reporter
    )
    return state, counters


async def _scrape_triton(
    client: EngineClient, target: ScrapeTarget, previous: Counters | None, reporter: ReportContext
) -> tuple[BackendStateReported, Counters | None]:
    seen = await client.fetch_triton(target)
    samples, error = None, seen.metrics_error
    if seen.metrics_text is not None:
        try:
            samples = parse_prometheus_text(seen.metrics_text)
        except ValueError as exc:
            error = f"unreadable metrics at {target.metrics_url}: {exc}"
    return triton_state(
        target,
        seen.live,
        seen.ready,
        seen.model_ready,
        samples,
        previous,
        time.monotonic(),
        reporter,
        metrics_error=error,
    )
