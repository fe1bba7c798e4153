"""Settings of the ingress service.

Env prefix ``HYPERINFER_INGRESS_`` for own fields; shared infrastructure reads
``HYPERINFER_*``, and the upstream credentials master key is the shared
``HYPERINFER_CREDENTIALS_KEY`` (the one the config service seals them with).
"""

from __future__ import annotations

from typing import Literal

from hyperinfer.runtime.settings import ServiceSettings
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict


class IngressSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="HYPERINFER_INGRESS_", extra="ignore", populate_by_name=True, frozen=True
    )

    http_port: int = 8080
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop",
        description="the event loop (read by the entry point before the loop starts; "
        "validated here)",
    )
    credentials_key: SecretStr | None = Field(
        default=None,
        description="master key that opens upstream credentials; unset: backends without "
        "credentials only",
        validation_alias=AliasChoices("credentials_key", "HYPERINFER_CREDENTIALS_KEY"),
    )
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0, description="413 above this")
    default_max_tokens: int = Field(
        default=1024, gt=0, description="completion tokens reserved when a request sets none"
    )
    config_wait_s: float = Field(default=5.0, ge=0, description="wait for a snapshot at start")
    retries_per_backend: int = Field(default=1, ge=0, le=5)
    retry_budget_s: float = Field(default=10.0, ge=0)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_open_s: float = Field(default=10.0, gt=0)
    usage_queue: int = Field(default=20_000, gt=0, description="pending usage events, at most")
    usage_linger_ms: float = Field(
        default=1.0, ge=0, le=1000, description="how long a usage batch waits for more events"
    )
    usage_stream_maxlen: int | None = Field(
        default=None,
        gt=0,
        description="cap the usage stream with XADD MAXLEN ~ (unset: no cap; telemetry trims "
        "past every consumer group, so a long ledger outage loses nothing)",
    )
    require_budgets_loaded: bool = Field(
        default=True,
        description="fail-closed teams with a budget wait until the quota service loaded it",
    )
    quota_redis_timeout_s: float = Field(default=0.5, gt=0)
    redis_max_connections: int = Field(
        default=64, gt=0, description="the quota/usage pool; a burst waits for a connection"
    )
    tracing: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="OpenTelemetry spans on the data-plane routes; auto: when "
        "HYPERINFER_OTLP_ENDPOINT is set (off, they cost nothing)",
    )
    publish_policy_switches: bool = Field(
        default=True,
        description="publish quota.v1.QuotaPolicySwitched on NATS (optional: NATS never "
        "gates readiness)",
    )
