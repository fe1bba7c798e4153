"""Settings of the telemetry service.

Env prefix ``HYPERINFER_TELEMETRY_`` for own fields;
shared infrastructure reads ``HYPERINFER_*``.
"""

from __future__ import annotations

from hyperinfer.runtime.settings import ServiceSettings
from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict


class TelemetrySettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="HYPERINFER_TELEMETRY_", extra="ignore", populate_by_name=True, frozen=True
    )

    http_port: int = Field(default=8102, ge=0, le=65535)

    # --- ledger consumer -------------------------------------------------------------
    consumer_name: str | None = Field(
        default=None, description="this replica's name in the consumer group; default node-pid"
    )
    batch_max_events: int = Field(default=1000, ge=1, le=50_000)
    batch_max_wait_ms: int = Field(
        default=100, ge=1, le=10_000, description="how long a batch may linger to fill up"
    )
    idle_block_ms: int = Field(
        default=1000, ge=1, le=10_000, description="XREADGROUP BLOCK while the stream is idle"
    )
    reclaim_min_idle_ms: int = Field(
        default=30_000, ge=100, description="pending entries idle this long are reclaimed"
    )
    reclaim_interval_s: float = Field(default=5.0, gt=0)
    max_deliveries: int = Field(
        default=5, ge=1, description="an entry delivered more often than this is dead-lettered"
    )
    retry_backoff_max_s: float = Field(default=5.0, gt=0)
    max_clock_skew_s: float = Field(
        default=86_400.0, gt=0, description="events starting further in the future are refused"
    )
    dlq_max_len: int = Field(default=100_000, ge=1, description="approximate DLQ stream cap")
    event_spans_per_batch: int = Field(
        default=64, ge=0, description="sampled events per batch that get a ledger-write span"
    )

    # --- maintenance -----------------------------------------------------------------
    raw_retention_days: int = Field(
        default=90, ge=0, description="raw usage rows kept this long (0: for ever)"
    )
    minute_rollup_retention_days: int = Field(default=14, ge=0)
    hour_rollup_retention_days: int = Field(default=400, ge=0)
    partitions_ahead_months: int = Field(default=2, ge=1, le=24)
    maintenance_interval_s: float = Field(default=3600.0, gt=0)
    trim_stream: bool = Field(
        default=True, description="trim stream entries every consumer group has acknowledged"
    )
    stale_consumer_idle_s: float = Field(
        default=3600.0, gt=0, description="consumers idle this long with nothing pending go"
    )
    lag_poll_interval_s: float = Field(default=2.0, gt=0)

    # --- rollups on NATS -------------------------------------------------------------
    publish_rollups: bool = True
    rollup_publish_interval_s: float = Field(default=10.0, gt=0)
    rollup_settle_s: float = Field(
        default=5.0, ge=0, description="a minute is published this long after it closes"
    )

    # --- spend API -------------------------------------------------------------------
    team_admin_scope: str = Field(
        default="admin", description="the API-key scope that makes a key its team's admin"
    )
    export_max_rows: int = Field(default=100_000, ge=1)

    @model_validator(mode="after")
    def _sane_timing(self) -> TelemetrySettings:
        if self.reclaim_min_idle_ms < 3 * self.batch_max_wait_ms:
            raise ValueError("reclaim_min_idle_ms must be at least 3 x batch_max_wait_ms")
        return self
