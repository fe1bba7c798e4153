"""Upstream credentials, encrypted at rest and decrypted only in memory.

The config service stores a backend's upstream credentials (its provider API key,
extra headers) only as ciphertext, and the config snapshot carries only that
ciphertext (``BackendConfig.credentials_ciphertext``). A node that calls providers
(ingress, a thick client) holds the same master key, ``HYPERINFER_CREDENTIALS_KEY``,
and decrypts a backend's credentials when it needs them::

    cipher = CredentialsCipher.from_env()          # reads HYPERINFER_CREDENTIALS_KEY
    creds = cipher.decrypt(backend.id, backend.credentials_ciphertext)
    api_key = creds.get("api_key")

Format: ``hic1.<key id>.<base64url(nonce ‖ AES-256-GCM ciphertext ‖ tag)>``. The AES
key is derived from the master key with HKDF-SHA256; the key id (8 hex characters of
a hash of the derived key) names the master key that sealed it, so a wrong key is
reported as such instead of as corruption. The backend id is authenticated data:
a ciphertext copied onto another backend does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Mapping

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ENV_VAR = "HYPERINFER_CREDENTIALS_KEY"
FORMAT = "hic1"
MIN_KEY_LENGTH = 16
_NONCE_BYTES = 12
_HKDF_INFO = b"hyperinfer credentials v1"


class CredentialsError(Exception):
    """A ciphertext cannot be opened: wrong master key, tampered, or not ours."""


def generate_master_key() -> str:
    """A new random master key (256 bits, url-safe text) for ``HYPERINFER_CREDENTIALS_KEY``."""
    return secrets.token_urlsafe(32)


class CredentialsCipher:
    """Seal and open credentials (a ``str → str`` mapping) with one master key."""

    def __init__(self, master_key: str) -> None:
        if len(master_key) < MIN_KEY_LENGTH:
            raise CredentialsError(
                f"credentials master key too short (need at least {MIN_KEY_LENGTH} characters)"
            )
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
            master_key.encode()
        )
        self._aead = AESGCM(derived)
        self.key_id = hashlib.sha256(b"key-id" + derived).hexdigest()[:8]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CredentialsCipher:
        """The cipher for ``HYPERINFER_CREDENTIALS_KEY`` (``CredentialsError`` when unset)."""
        value = (os.environ if environ is None else environ).get(ENV_VAR, "")
        if not value:
            raise CredentialsError(f"{ENV_VAR} is not set; cannot decrypt upstream credentials")
        return cls(value)

    def encrypt(self, backend_id: str, credentials: Mapping[str, str]) -> str:
        """Seal ``credentials`` for ``backend_id``; a fresh nonce every time."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, orjson.dumps(dict(credentials)), _aad(backend_id))
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{FORMAT}.{self.key_id}.{body}"

    def decrypt(self, backend_id: str, ciphertext: str) -> dict[str, str]:
        """Open a ciphertext sealed for ``backend_id`` (``CredentialsError`` if it cannot)."""
        fmt, key_id, body = _split(ciphertext)
        if fmt != FORMAT:
            raise CredentialsError(f"unknown credentials format {fmt!r}")
        if key_id != self.key_id:
            raise CredentialsError(
                f"credentials sealed with another master key (key id {key_id}, ours {self.key_id})"
            )
        raw = _b64decode(body)
        try:
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad(backend_id))
        except InvalidTag:
            raise CredentialsError(
                f"credentials do not open for backend {backend_id!r} (tampered or moved)"
            ) from None
        return _as_mapping(plain)


def _aad(backend_id: str) -> bytes:
    return b"hyperinfer-backend:" + backend_id.encode()


def _split(ciphertext: str) -> tuple[str, str, str]:
    parts = ciphertext.split(".")
    if len(parts) != 3:
        raise CredentialsError("malformed credentials ciphertext")
    return parts[0], parts[1], parts[2]


def _b64decode(body: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except ValueError:
        raise CredentialsError("malformed credentials ciphertext") from None
    if len(raw) <= _NONCE_BYTES + 16:
        raise CredentialsError("malformed credentials ciphertext")
    return raw


def _as_mapping(plain: bytes) -> dict[str, str]:
    value = orjson.loads(plain)
    if not isinstance(value, dict):
        raise CredentialsError("credentials are not a mapping")
    return {str(k): str(v) for k, v in value.items()}
