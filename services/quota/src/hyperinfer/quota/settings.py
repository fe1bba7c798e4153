"""Settings of the quota service.

Env prefix ``HYPERINFER_QUOTA_`` for own fields;
shared infrastructure reads ``HYPERINFER_*``.
"""

from __future__ import annotations

from hyperinfer.runtime.settings import ServiceSettings
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict


class QuotaSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="HYPERINFER_QUOTA_", extra="ignore", populate_by_name=True, frozen=True
    )

    http_port: int = 8101
    consumer_name: str = Field(
        default="", description="name in the usage consumer group; default node-host-pid"
    )
    batch_size: int = Field(default=200, ge=1, le=10_000)
    block_ms: int = Field(default=1000, ge=1, le=60_000)
    claim_idle_s: float = Field(default=60.0, gt=0, description="take over a dead consumer's")
    reservation_ttl_s: float = Field(default=900.0, gt=0, description="longest request")
    post_deadline_s: float = Field(default=600.0, gt=0, description="settle -> usage posted")
    sweep_interval_s: float = Field(default=5.0, gt=0)
    epoch_check_interval_s: float = Field(default=1.0, gt=0)
    reconcile_interval_s: float = Field(default=60.0, gt=0)
    alert_flush_interval_s: float = Field(default=5.0, gt=0)
    alert_max_age_s: float = Field(default=3600.0, gt=0, description="stop retrying after")
    alert_thresholds: list[int] = Field(default=[80, 100])
    publish_alert_jobs: bool = Field(default=True, description="quota.alert on JetStream")
    processed_retention_days: float = Field(default=40.0, gt=0)
    nats_concurrency: int = Field(default=64, ge=1, le=4096)

    @field_validator("alert_thresholds")
    @classmethod
    def _percentages(cls, value: list[int]) -> list[int]:
        if any(not 0 < pct <= 1000 for pct in value):
            raise ValueError("thresholds are percentages in 1..1000")
        return sorted(set(value))
