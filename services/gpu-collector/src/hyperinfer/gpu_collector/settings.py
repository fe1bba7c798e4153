"""Settings of the gpu-collector service.

Env prefix ``HYPERINFER_GPU_COLLECTOR_`` for own fields;
shared infrastructure reads ``HYPERINFER_*``.
"""

from __future__ import annotations

from hyperinfer.runtime.settings import ServiceSettings
from pydantic_settings import SettingsConfigDict


class GpuCollectorSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="HYPERINFER_GPU_COLLECTOR_", extra="ignore", populate_by_name=True, frozen=True
    )

    http_port: int = 8103
