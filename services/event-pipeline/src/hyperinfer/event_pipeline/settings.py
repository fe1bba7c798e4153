"""Settings of the event-pipeline service.

Env prefix ``HYPERINFER_EVENT_PIPELINE_`` for own fields (``HYPERINFER_EVENT_PIPELINE_BACKEND``);
shared infrastructure reads ``HYPERINFER_*``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from hyperinfer.runtime.settings import ServiceSettings
from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict


class EventPipelineSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="HYPERINFER_EVENT_PIPELINE_", extra="ignore", populate_by_name=True, frozen=True
    )

    http_port: int = 8105
    backend: Literal["jetstream", "redis"] = Field(
        default="jetstream", description="where the priority queues live"
    )
    streams_file: Path | None = Field(default=None, description="infra/nats/streams.json")

    # --- queues and admission ----------------------------------------------------------
    queue_capacity: int | None = Field(
        default=None, ge=1, description="override every priority's hard cap (messages)"
    )
    admit_low_pct: float = Field(default=50.0, gt=0, le=100)
    admit_normal_pct: float = Field(default=75.0, gt=0, le=100)
    admit_high_pct: float = Field(default=90.0, gt=0, le=100)
    capacity_cache_s: float = Field(default=0.5, ge=0)
    admission_retry_after_s: int = Field(default=2, ge=1, le=3600)
    dedupe_window_s: float = Field(default=120.0, gt=0)

    # --- workers -------------------------------------------------------------------------
    worker_enabled: bool = True
    worker_slots: int = Field(default=32, ge=1, le=10_000)
    worker_consumer: str = Field(default="event-pipeline", min_length=1, max_length=64)
    weight_high: int = Field(default=4, ge=1)
    weight_normal: int = Field(default=2, ge=1)
    weight_low: int = Field(default=1, ge=1)
    ageing_s: float = Field(default=2.0, gt=0, description="a waiting priority is served first")
    idle_poll_max_s: float = Field(default=0.05, gt=0)
    ack_wait_s: float = Field(default=30.0, gt=0)
    in_progress_interval_s: float | None = Field(default=None, gt=0)

    # --- retries -------------------------------------------------------------------------
    retry_base_s: float = Field(default=1.0, gt=0)
    retry_cap_s: float = Field(default=300.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=1000)
    sweep_interval_s: float = Field(default=5.0, gt=0)
    exhausted_sweep_interval_s: float = Field(
        default=30.0,
        gt=0,
        description="JetStream: how often to dead-letter jobs whose max-deliveries advisory "
        "no pipeline process saw (also once at start)",
    )

    # --- DLQ -----------------------------------------------------------------------------
    dlq_replay_rate_per_s: float = Field(default=50.0, gt=0)
    dlq_replay_max: int = Field(default=1000, ge=1)
    dlq_max_age_s: float = Field(default=14 * 86400.0, gt=0)

    # --- processors ----------------------------------------------------------------------
    webhook_secret: SecretStr = SecretStr("dev-webhook-secret")
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    quota_alert_webhooks: list[str] = Field(default_factory=list)
    quota_alert_subjects: list[str] = Field(default_factory=list)
    data_plane_enabled: bool = Field(
        default=True,
        description="run inference.requested jobs through an in-process data plane (as the "
        "job's API key, by id); off: such jobs are dead-lettered",
    )
    credentials_key: SecretStr | None = Field(
        default=None,
        description="master key that opens upstream credentials (shared with the config "
        "service and the ingress); unset: backends without credentials only",
        validation_alias=AliasChoices("credentials_key", "HYPERINFER_CREDENTIALS_KEY"),
    )
    config_wait_s: float = Field(
        default=2.0, ge=0, description="how long start-up waits for a config snapshot"
    )
    require_budgets_loaded: bool = Field(
        default=True,
        description="fail-closed teams with a budget wait until the quota service loaded it",
    )

    @model_validator(mode="after")
    def _admission_order(self) -> EventPipelineSettings:
        if not self.admit_low_pct <= self.admit_normal_pct <= self.admit_high_pct:
            raise ValueError("admission thresholds must satisfy LOW <= NORMAL <= HIGH")
        if self.retry_base_s > self.retry_cap_s:
            raise ValueError("retry_base_s must not exceed retry_cap_s")
        self.require_real_secret("webhook_secret", self.webhook_secret)
        return self

    @property
    def progress_interval_s(self) -> float:
        """How often a running job tells the queue it is alive (well inside ack_wait)."""
        return self.in_progress_interval_s or max(0.05, self.ack_wait_s / 3)
