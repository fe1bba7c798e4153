"""Settings of the gpu-collector service.

Env prefix ``HYPERINFER_GPU_COLLECTOR_`` for own fields;
shared infrastructure reads ``HYPERINFER_*`` (the node name is ``HYPERINFER_NODE_NAME``).
"""

from __future__ import annotations

from typing import Literal

from hyperinfer.runtime.settings import ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict


class GpuCollectorSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="HYPERINFER_GPU_COLLECTOR_", extra="ignore", populate_by_name=True, frozen=True
    )

    http_port: int = Field(default=8103, ge=0, le=65535)
    gpu_source: Literal["nvml", "fake"] = Field(
        default="nvml",
        description="nvml: the real library; fake: simulated GPUs (demos, tests, no-GPU hosts)",
    )
    fake_gpu_count: int = Field(default=2, ge=0, le=64, description="GPUs of the fake source")
    poll_interval_s: float = Field(default=5.0, gt=0, le=3600, description="NVML poll period")
    scrape_interval_s: float = Field(
        default=2.0, gt=0, le=3600, description="engine (vLLM/Triton) scrape period"
    )
    scrape_timeout_s: float = Field(
        default=1.0, gt=0, le=60, description="per request; an unreachable engine fails fast"
    )
    scrape_untagged: bool = Field(
        default=True,
        description="also scrape engines with no node:<name> tag (else only this node's own)",
    )
