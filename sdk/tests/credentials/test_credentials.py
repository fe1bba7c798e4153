"""Upstream credentials: sealed by the config service, opened by data-plane nodes."""

from __future__ import annotations

import pytest
from hyperinfer.client.credentials import (
    ENV_VAR,
    CredentialsCipher,
    CredentialsError,
    generate_master_key,
)
from hypothesis import given, settings
from hypothesis import strategies as st

KEY = "a-master-key-of-enough-length-0001"


def test_round_trip() -> None:
    cipher = CredentialsCipher(KEY)
    sealed = cipher.encrypt("openai-main", {"api_key": "sk-upstream-secret"})
    assert "sk-upstream-secret" not in sealed
    assert sealed.startswith(f"hic1.{cipher.key_id}.")
    opened = CredentialsCipher(KEY).decrypt("openai-main", sealed)
    assert opened == {"api_key": "sk-upstream-secret"}


def test_every_seal_is_different() -> None:
    cipher = CredentialsCipher(KEY)
    assert cipher.encrypt("b", {"api_key": "x"}) != cipher.encrypt("b", {"api_key": "x"})


def test_wrong_master_key_is_named() -> None:
    sealed = CredentialsCipher(KEY).encrypt("b", {"api_key": "x"})
    with pytest.raises(CredentialsError, match="another master key"):
        CredentialsCipher("another-master-key-of-enough-len").decrypt("b", sealed)


def test_ciphertext_moved_to_another_backend_does_not_open() -> None:
    cipher = CredentialsCipher(KEY)
    sealed = cipher.encrypt("backend-a", {"api_key": "x"})
    with pytest.raises(CredentialsError, match="backend-b"):
        cipher.decrypt("backend-b", sealed)


def test_tampered_ciphertext_does_not_open() -> None:
    cipher = CredentialsCipher(KEY)
    sealed = cipher.encrypt("b", {"api_key": "x"})
    flipped = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
    with pytest.raises(CredentialsError):
        cipher.decrypt("b", flipped)


@pytest.mark.parametrize("garbage", ["", "x", "hic1.abc", "hic2.a.b", "hic1.k.!!!", "a.b.c.d"])
def test_garbage_is_a_clear_error(garbage: str) -> None:
    with pytest.raises(CredentialsError):
        CredentialsCipher(KEY).decrypt("b", garbage)


def test_short_master_key_is_refused() -> None:
    with pytest.raises(CredentialsError, match="too short"):
        CredentialsCipher("short")


def test_from_env() -> None:
    key = generate_master_key()
    sealed = CredentialsCipher(key).encrypt("b", {"api_key": "x"})
    assert CredentialsCipher.from_env({ENV_VAR: key}).decrypt("b", sealed) == {"api_key": "x"}
    with pytest.raises(CredentialsError, match=ENV_VAR):
        CredentialsCipher.from_env({})


@settings(max_examples=50, deadline=None)
@given(
    backend=st.text(min_size=1, max_size=40),
    creds=st.dictionaries(st.text(max_size=20), st.text(max_size=200), max_size=5),
)
def test_any_credentials_round_trip(backend: str, creds: dict[str, str]) -> None:
    cipher = CredentialsCipher(KEY)
    assert cipher.decrypt(backend, cipher.encrypt(backend, creds)) == creds
