"""Settings: typed, prefixed, read once; any bad value is one SettingsError line."""

from __future__ import annotations

import pytest
from hyperinfer.runtime.errors import SettingsError
from hyperinfer.runtime.settings import ServiceSettings, load_settings, redact_url
from pydantic_settings import SettingsConfigDict


class QuotaLikeSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="HYPERINFER_QUOTA_", extra="ignore", populate_by_name=True, frozen=True
    )

    http_port: int = 8101
    window_s: float = 60.0


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("HYPERINFER_"):
            monkeypatch.delenv(name)


def test_shared_fields_read_the_shared_prefix_and_own_fields_the_service_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HYPERINFER_REDIS_URL", "redis://10.0.0.5:6380/2")
    monkeypatch.setenv("HYPERINFER_QUOTA_HTTP_PORT", "9101")
    monkeypatch.setenv("HYPERINFER_QUOTA_REDIS_URL", "redis://ignored:1/0")
    settings = load_settings(QuotaLikeSettings)
    assert settings.redis_url == "redis://10.0.0.5:6380/2"
    assert settings.http_port == 9101
    assert settings.nats_url == "nats://127.0.0.1:4222"  # the default


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"HYPERINFER_QUOTA_HTTP_PORT": "x"},
            "invalid setting http_port (env HYPERINFER_QUOTA_HTTP_PORT): "
            "Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            {"HYPERINFER_QUOTA_HTTP_PORT": "70000"},
            "invalid setting http_port (env HYPERINFER_QUOTA_HTTP_PORT): "
            "must be a TCP port number, 0-65535",
        ),
        (
            {"HYPERINFER_NATS_URL": "http://127.0.0.1:4222"},
            "invalid setting nats_url (env HYPERINFER_NATS_URL): "
            "NATS URL must start with one of nats://, tls://",
        ),
        (
            {"HYPERINFER_LOG_LEVEL": "LOUD"},
            "invalid setting log_level (env HYPERINFER_LOG_LEVEL): "
            "Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'",
        ),
        (
            {"HYPERINFER_ENVIRONMENT": "prod", "HYPERINFER_ADMIN_KEY": "changeme"},
            "invalid settings: setting admin_key holds a placeholder secret; set a real one",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], line: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(QuotaLikeSettings)
    assert str(caught.value) == line
    assert "\n" not in str(caught.value)


def test_prod_accepts_real_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPERINFER_ENVIRONMENT", "prod")
    monkeypatch.setenv("HYPERINFER_ADMIN_KEY", "a-real-admin-key-3f9c")
    monkeypatch.setenv("HYPERINFER_INTERNAL_KEY", "a-real-internal-key-77aa")
    settings = load_settings(QuotaLikeSettings)
    assert settings.admin_key.get_secret_value() == "a-real-admin-key-3f9c"
    assert "a-real-admin-key" not in repr(settings)  # secrets stay out of reprs and logs


def test_settings_are_frozen() -> None:
    settings = load_settings(QuotaLikeSettings)
    with pytest.raises(ValueError, match="frozen"):
        settings.http_port = 1  # type: ignore[misc]


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("postgresql://app:s3cret@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
