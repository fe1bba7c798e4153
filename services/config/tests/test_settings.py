"""The config service's settings: secrets are real in prod, the master key long enough."""

from __future__ import annotations

import pytest
from hyperinfer.config.settings import ConfigSettings
from hyperinfer.runtime.errors import SettingsError
from hyperinfer.runtime.settings import load_settings

REAL = {"admin_key": "a-real-admin-key-1234", "internal_key": "a-real-internal-key-1234"}


def test_dev_defaults_work_outside_prod() -> None:
    settings = ConfigSettings(environment="dev")
    assert settings.http_port == 8100
    assert len(settings.credentials_key.get_secret_value()) >= 16


def test_prod_refuses_the_placeholder_credentials_key() -> None:
    with pytest.raises(SettingsError, match="credentials_key holds a placeholder"):
        load_settings(ConfigSettings, environment="prod", **REAL)
    ok = load_settings(ConfigSettings, environment="prod", credentials_key="k" * 32, **REAL)
    assert ok.credentials_key.get_secret_value() == "k" * 32


def test_short_master_key_is_refused() -> None:
    with pytest.raises(SettingsError, match="at least 16"):
        load_settings(ConfigSettings, credentials_key="short")


def test_shared_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPERINFER_CREDENTIALS_KEY", "from-the-environment-0001")
    monkeypatch.setenv("HYPERINFER_CONFIG_KEY_HASH_SALT", "salt-from-env")
    monkeypatch.setenv("HYPERINFER_CONFIG_MAX_BODY_BYTES", "4096")
    settings = ConfigSettings()
    assert settings.credentials_key.get_secret_value() == "from-the-environment-0001"
    assert settings.key_hash_salt == "salt-from-env"
    assert settings.max_body_bytes == 4096
    assert "from-the-environment" not in repr(settings)
