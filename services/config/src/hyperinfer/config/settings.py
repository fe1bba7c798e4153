"""Settings of the config service.

Env prefix ``HYPERINFER_CONFIG_`` for own fields;
shared infrastructure reads ``HYPERINFER_*``.
"""

from __future__ import annotations

from pathlib import Path

from hyperinfer.runtime.migrate import default_migrations_dir
from hyperinfer.runtime.settings import ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict


class ConfigSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="HYPERINFER_CONFIG_", extra="ignore", populate_by_name=True, frozen=True
    )

    http_port: int = 8100
    migrations_dir: Path = Field(default_factory=default_migrations_dir)
