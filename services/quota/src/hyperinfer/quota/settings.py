"""Settings of the quota service.

Env prefix ``HYPERINFER_QUOTA_`` for own fields;
shared infrastructure reads ``HYPERINFER_*``.
"""

from __future__ import annotations

from hyperinfer.runtime.settings import ServiceSettings
from pydantic_settings import SettingsConfigDict


class QuotaSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="HYPERINFER_QUOTA_", extra="ignore", populate_by_name=True, frozen=True
    )

    http_port: int = 8101
