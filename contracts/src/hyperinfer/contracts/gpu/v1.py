"""GPU contracts v1: what the collector reports per node. Absent means unsupported."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

EVENT_METRICS = "gpu.metrics"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class GpuProcess(_Model):
    pid: int
    used_memory_bytes: int | None = None
    name: str | None = None
    kind: Literal["compute", "graphics"] | None = Field(
        default=None, description="which NVML process list it came from"
    )


class GpuSample(_Model):
    index: int = Field(ge=0)
    name: str | None = None
    uuid: str | None = None
    pci_bus_id: str | None = None
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    memory_free_bytes: int | None = None
    utilization_gpu_pct: float | None = None
    utilization_memory_pct: float | None = None
    temperature_c: float | None = None
    power_usage_w: float | None = None
    power_limit_w: float | None = None
    clock_graphics_mhz: int | None = None
    clock_memory_mhz: int | None = None
    pstate: int | None = None
    processes: list[GpuProcess] | None = None
    ecc_errors_corrected: int | None = Field(
        default=None, description="volatile count (since the last driver load)"
    )
    ecc_errors_uncorrected: int | None = Field(
        default=None, description="volatile count (since the last driver load)"
    )
    mig_mode: bool | None = None


class GpuMetricsReported(_Model):
    """One poll of one node; with no GPU it is a heartbeat with ``status='no_gpu'``."""

    node: str
    collected_at: AwareDatetime
    status: Literal["ok", "no_gpu", "error"] = "ok"
    detail: str | None = None
    driver_version: str | None = None
    cuda_version: str | None = None
    nvml_version: str | None = None
    gpus: list[GpuSample] = Field(default_factory=list)
    interval_s: float | None = Field(
        default=None, gt=0, description="the poll interval: consumers derive staleness from it"
    )
