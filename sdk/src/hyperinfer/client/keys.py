"""API keys: how they look and how they are hashed.

The config service stores only ``hash_api_key(plaintext, salt)``; every data-plane node
computes the same hash for an incoming key and looks it up in the local snapshot
(``ConfigSnapshot.keys``), so no node ever needs the plaintext. Keys carry 256 bits of
randomness, so a salted HMAC-SHA256 is enough; the salt travels in the snapshot
(``key_hash_salt``) and is not secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "hi-"
KEY_HASH_SCHEME = "hmac-sha256"


def generate_api_key() -> str:
    """A new plaintext key, shown to its owner once: ``hi-`` + 43 url-safe characters."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(plaintext: str, salt: str) -> str:
    """The keyed hash stored and looked up instead of the key itself (hex)."""
    return hmac.new(salt.encode(), plaintext.encode(), hashlib.sha256).hexdigest()


def key_hint(plaintext: str) -> str:
    """What may be shown again later: the prefix and the last four characters."""
    return f"{plaintext[:6]}…{plaintext[-4:]}"
