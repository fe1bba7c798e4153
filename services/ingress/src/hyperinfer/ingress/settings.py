"""Settings of the ingress service.

Env prefix ``HYPERINFER_INGRESS_`` for own fields;
shared infrastructure reads ``HYPERINFER_*``.
"""

from __future__ import annotations

from hyperinfer.runtime.settings import ServiceSettings
from pydantic_settings import SettingsConfigDict


class IngressSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="HYPERINFER_INGRESS_", extra="ignore", populate_by_name=True, frozen=True
    )

    http_port: int = 8080
