"""Typed settings, read once at start-up, shared fields first.

Shared infrastructure is read from ``HYPERINFER_<FIELD>`` (``HYPERINFER_REDIS_URL``);
each service subclasses ``ServiceSettings`` with its own prefix
(``HYPERINFER_QUOTA_``) for fields of its own.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from hyperinfer.runtime.errors import SettingsError
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "changeme",
        "change-me",
        "dev",
        "secret",
        "dev-master-key",
        "dev-admin-key",
        "dev-internal-key",
    }
)


class ServiceSettings(BaseSettings):
    """Fields every service has. Subclasses set ``env_prefix`` and add their own."""

    model_config = SettingsConfigDict(
        env_prefix="HYPERINFER_", extra="ignore", populate_by_name=True, frozen=True
    )

    environment: Literal["dev", "test", "prod"] = Field(
        default="dev", validation_alias=AliasChoices("environment", "HYPERINFER_ENVIRONMENT")
    )
    node_name: str = Field(
        default="local", validation_alias=AliasChoices("node_name", "HYPERINFER_NODE_NAME")
    )
    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        validation_alias=AliasChoices("nats_url", "HYPERINFER_NATS_URL"),
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("redis_url", "HYPERINFER_REDIS_URL"),
    )
    postgres_dsn: SecretStr = Field(
        default=SecretStr("postgresql://postgres@127.0.0.1:5432/hyperinfer"),
        validation_alias=AliasChoices("postgres_dsn", "HYPERINFER_POSTGRES_DSN"),
    )
    admin_key: SecretStr = Field(
        default=SecretStr("dev-admin-key"),
        description="master admin key for admin APIs (config, telemetry spend API)",
        validation_alias=AliasChoices("admin_key", "HYPERINFER_ADMIN_KEY"),
    )
    internal_key: SecretStr = Field(
        default=SecretStr("dev-internal-key"),
        description="shared key for internal endpoints (X-Internal-Key)",
        validation_alias=AliasChoices("internal_key", "HYPERINFER_INTERNAL_KEY"),
    )
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", validation_alias=AliasChoices("log_level", "HYPERINFER_LOG_LEVEL")
    )
    otlp_endpoint: str | None = Field(
        default=None, validation_alias=AliasChoices("otlp_endpoint", "HYPERINFER_OTLP_ENDPOINT")
    )
    startup_timeout_s: float = Field(
        default=15.0,
        gt=0,
        validation_alias=AliasChoices("startup_timeout_s", "HYPERINFER_STARTUP_TIMEOUT_S"),
    )
    shutdown_grace_s: float = Field(
        default=10.0,
        gt=0,
        validation_alias=AliasChoices("shutdown_grace_s", "HYPERINFER_SHUTDOWN_GRACE_S"),
    )

    @field_validator("http_port")
    @classmethod
    def _tcp_port(cls, value: int) -> int:
        # a validator, not Field(ge, le): services redeclare http_port with their default
        if not 0 <= value <= 65535:
            raise ValueError("must be a TCP port number, 0-65535")
        return value

    @field_validator("nats_url")
    @classmethod
    def _nats_scheme(cls, value: str) -> str:
        return _require_scheme(value, ("nats", "tls"), "NATS URL")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        return _require_scheme(value, ("redis", "rediss", "unix"), "Redis URL")

    @field_validator("postgres_dsn")
    @classmethod
    def _pg_scheme(cls, value: SecretStr) -> SecretStr:
        _require_scheme(value.get_secret_value(), ("postgresql", "postgres"), "PostgreSQL DSN")
        return value

    @model_validator(mode="after")
    def _real_shared_secrets(self) -> ServiceSettings:
        self.require_real_secret("admin_key", self.admin_key)
        self.require_real_secret("internal_key", self.internal_key)
        return self

    def require_real_secret(self, name: str, value: SecretStr) -> None:
        """Outside dev/test, refuse placeholder secrets."""
        if self.environment == "prod" and value.get_secret_value() in PLACEHOLDER_SECRETS:
            raise ValueError(f"setting {name} holds a placeholder secret; set a real one")


def _require_scheme(value: str, schemes: tuple[str, ...], what: str) -> str:
    scheme = urlsplit(value).scheme
    if scheme not in schemes:
        raise ValueError(f"{what} must start with one of {', '.join(s + '://' for s in schemes)}")
    return value


def redact_url(url: str) -> str:
    """The URL without its password, for logs and error lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def load_settings(cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Read settings from the environment; any problem becomes one ``SettingsError`` line."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        field = ".".join(str(p) for p in err.get("loc", ()))
        if not field:
            raise SettingsError(f"invalid settings: {message}") from None
        name, env = _field_and_env(cls, field)
        raise SettingsError(f"invalid setting {name} (env {env}): {message}") from None


def _field_and_env(cls: type[ServiceSettings], loc: str) -> tuple[str, str]:
    """The field an error location names, and the environment variable that sets it.

    Shared fields are read from ``HYPERINFER_<FIELD>`` (their alias), not from the
    service's own prefix; the location may be the field name or the alias used.
    """
    prefix = str(cls.model_config.get("env_prefix", "HYPERINFER_"))
    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        envs = [c for c in choices if isinstance(c, str) and c.upper() == c]
        if loc == name or loc.upper() in envs:
            return name, envs[0] if envs else f"{prefix}{name.upper()}"
    return loc, f"{prefix}{loc.upper()}"
