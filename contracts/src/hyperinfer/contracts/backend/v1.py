"""Backend contracts v1: engine state scraped from vLLM, Triton and friends."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

EVENT_STATE = "backend.state"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class BackendStateReported(_Model):
    """One scrape of one backend. Absent fields: the engine does not expose them.

    ``latency_ms_avg``, ``throughput_tokens_per_s``, ``queue_time_ms_avg``, ``error_rate``
    and ``requests_per_s`` are windowed (since the previous scrape), the ``*_total``
    fields are the engine's cumulative counters, the others are gauges.
    """

    backend_id: str
    engine: Literal["vllm", "triton", "openai_compatible", "unknown"] = "unknown"
    node: str | None = None
    observed_at: AwareDatetime
    healthy: bool
    detail: str | None = None
    ready_models: list[str] = Field(default_factory=list)
    running_requests: float | None = None
    waiting_requests: float | None = None
    kv_cache_usage: float | None = Field(default=None, description="0..1")
    requests_success_total: float | None = None
    throughput_tokens_per_s: float | None = None
    latency_ms_avg: float | None = None
    queue_time_us_total: float | None = None
    inference_count_total: float | None = None
    pending_requests: float | None = None
    not_ready_models: list[str] = Field(
        default_factory=list, description="configured models the engine reports as not ready"
    )
    queue_time_ms_avg: float | None = Field(
        default=None, description="mean queue time of requests finished since the last scrape"
    )
    error_rate: float | None = Field(
        default=None, ge=0, le=1, description="failed / finished since the last scrape"
    )
    requests_per_s: float | None = None
    interval_s: float | None = Field(
        default=None, gt=0, description="the scrape interval: consumers derive staleness from it"
    )
