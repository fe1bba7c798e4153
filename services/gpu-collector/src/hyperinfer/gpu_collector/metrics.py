"""Prometheus view of the latest GPU poll and engine scrapes.

A custom collector reads the monitors' latest reports at scrape time, so a field a GPU
does not support produces no sample (rather than a stale or zero one), and a GPU or
backend that disappears disappears from ``/metrics`` too.
"""

from __future__ import annotations

from collections.abc import Iterator

from hyperinfer.gpu_collector.monitors import EngineMonitor, GpuMonitor
from prometheus_client.core import GaugeMetricFamily, Metric

GPU_GAUGES = (
    ("memory_total_bytes", "hyperinfer_gpu_memory_total_bytes", "GPU memory in total"),
    ("memory_used_bytes", "hyperinfer_gpu_memory_used_bytes", "GPU memory in use"),
    ("memory_free_bytes", "hyperinfer_gpu_memory_free_bytes", "GPU memory free"),
    ("utilization_gpu_pct", "hyperinfer_gpu_utilization_percent", "GPU busy time, percent"),
    ("utilization_memory_pct", "hyperinfer_gpu_memory_utilization_percent", "memory busy, %"),
    ("temperature_c", "hyperinfer_gpu_temperature_celsius", "GPU core temperature"),
    ("power_usage_w", "hyperinfer_gpu_power_usage_watts", "power draw"),
    ("power_limit_w", "hyperinfer_gpu_power_limit_watts", "enforced power limit"),
    ("clock_graphics_mhz", "hyperinfer_gpu_clock_graphics_mhz", "graphics clock"),
    ("clock_memory_mhz", "hyperinfer_gpu_clock_memory_mhz", "memory clock"),
    ("pstate", "hyperinfer_gpu_pstate", "performance state (0 fastest, 15 slowest)"),
    ("ecc_errors_corrected", "hyperinfer_gpu_ecc_errors_corrected", "volatile corrected ECC"),
    ("ecc_errors_uncorrected", "hyperinfer_gpu_ecc_errors_uncorrected", "volatile uncorrected"),
    ("mig_mode", "hyperinfer_gpu_mig_mode", "1 when MIG is enabled"),
)
BACKEND_GAUGES = (
    ("running_requests", "hyperinfer_backend_running_requests", "requests being served"),
    ("waiting_requests", "hyperinfer_backend_waiting_requests", "requests queued (vLLM)"),
    ("pending_requests", "hyperinfer_backend_pending_requests", "requests queued (Triton)"),
    ("kv_cache_usage", "hyperinfer_backend_kv_cache_usage_ratio", "KV cache in use, 0..1"),
    ("latency_ms_avg", "hyperinfer_backend_latency_ms_avg", "mean latency since last scrape"),
    ("queue_time_ms_avg", "hyperinfer_backend_queue_time_ms_avg", "mean queue time, window"),
    ("throughput_tokens_per_s", "hyperinfer_backend_generation_tokens_per_second", "tokens/s"),
    ("requests_per_s", "hyperinfer_backend_requests_per_second", "finished requests per s"),
    ("error_rate", "hyperinfer_backend_error_rate", "failed/finished since last scrape"),
)
_GPU_LABELS = ["node", "gpu", "uuid", "name"]


class CollectorMetrics:
    """Register with ``registry.register(CollectorMetrics(gpu, engines))``."""

    def __init__(self, gpu: GpuMonitor, engines: EngineMonitor) -> None:
        self._gpu = gpu
        self._engines = engines

    def collect(self) -> Iterator[Metric]:
        yield from self._node()
        yield from self._gpus()
        yield from self._backends()

    def _node(self) -> Iterator[Metric]:
        status = GaugeMetricFamily(
            "hyperinfer_gpu_node_status",
            "1 for the node's current status",
            labels=["node", "status"],
        )
        count = GaugeMetricFamily(
            "hyperinfer_gpu_count", "GPUs seen by the last poll", labels=["node"]
        )
        latest = self._gpu.latest
        if latest is not None:
            status.add_metric([latest.node, latest.status], 1)
            count.add_metric([latest.node], len(latest.gpus))
        yield status
        yield count

    def _gpus(self) -> Iterator[Metric]:
        latest = self._gpu.latest
        gpus = latest.gpus if latest is not None else []
        node = latest.node if latest is not None else ""
        processes = GaugeMetricFamily(
            "hyperinfer_gpu_processes", "running processes", labels=_GPU_LABELS
        )
        for field, name, doc in GPU_GAUGES:
            family = GaugeMetricFamily(name, doc, labels=_GPU_LABELS)
            for gpu in gpus:
                value = getattr(gpu, field)
                if value is not None:
                    family.add_metric(
                        _gpu_labels(node, gpu.index, gpu.uuid, gpu.name), float(value)
                    )
            yield family
        for gpu in gpus:
            if gpu.processes is not None:
                processes.add_metric(
                    _gpu_labels(node, gpu.index, gpu.uuid, gpu.name), len(gpu.processes)
                )
        yield processes

    def _backends(self) -> Iterator[Metric]:
        states = sorted(self._engines.latest.items())
        healthy = GaugeMetricFamily(
            "hyperinfer_backend_healthy",
            "1 when the last scrape was healthy",
            labels=["backend", "engine"],
        )
        for backend, state in states:
            healthy.add_metric([backend, state.engine], 1.0 if state.healthy else 0.0)
        yield healthy
        for field, name, doc in BACKEND_GAUGES:
            family = GaugeMetricFamily(name, doc, labels=["backend", "engine"])
            for backend, state in states:
                value = getattr(state, field)
                if value is not None:
                    family.add_metric([backend, state.engine], float(value))
            yield family


def _gpu_labels(node: str, index: int, uuid: str | None, name: str | None) -> list[str]:
    return [node, str(index), uuid or "", name or ""]
