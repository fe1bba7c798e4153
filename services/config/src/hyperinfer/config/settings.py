"""Settings of the config service.

Env prefix ``HYPERINFER_CONFIG_`` for own fields; shared infrastructure and the shared
secrets read ``HYPERINFER_*`` (``HYPERINFER_ADMIN_KEY``, ``HYPERINFER_CREDENTIALS_KEY``).
"""

from __future__ import annotations

from pathlib import Path

from hyperinfer.client.credentials import ENV_VAR as CREDENTIALS_ENV_VAR
from hyperinfer.client.credentials import MIN_KEY_LENGTH
from hyperinfer.runtime.migrate import default_migrations_dir
from hyperinfer.runtime.settings import ServiceSettings
from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

DEV_CREDENTIALS_KEY = "dev-credentials-key-not-for-production"


class ConfigSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="HYPERINFER_CONFIG_", extra="ignore", populate_by_name=True, frozen=True
    )

    http_port: int = Field(default=8100, ge=0, le=65535)
    migrations_dir: Path = Field(default_factory=default_migrations_dir)
    credentials_key: SecretStr = Field(
        default=SecretStr(DEV_CREDENTIALS_KEY),
        description="master key that encrypts upstream credentials at rest (shared with "
        "the data-plane nodes that call providers)",
        validation_alias=AliasChoices("credentials_key", CREDENTIALS_ENV_VAR),
    )
    key_hash_salt: str = Field(
        default="hyperinfer-dev-salt",
        min_length=8,
        description="salt of the keyed API-key hashes; not secret, travels in the snapshot; "
        "changing it invalidates every API key",
    )
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="larger bodies get 413")
    republish_interval_s: float = Field(
        default=30.0, gt=0, description="how often the snapshot in Redis is checked and repaired"
    )
    publish_timeout_s: float = Field(
        default=2.0, gt=0, description="how long a change waits for its snapshot to be stored"
    )
    page_size: int = Field(default=50, ge=1, le=500)
    max_page_size: int = Field(default=500, ge=1)

    @model_validator(mode="after")
    def _real_credentials_key(self) -> ConfigSettings:
        key = self.credentials_key.get_secret_value()
        if self.environment == "prod" and key == DEV_CREDENTIALS_KEY:
            raise ValueError("setting credentials_key holds a placeholder secret; set a real one")
        self.require_real_secret("credentials_key", self.credentials_key)
        if len(key) < MIN_KEY_LENGTH:
            raise ValueError(f"setting credentials_key must have at least {MIN_KEY_LENGTH} chars")
        return self
