"""Contract errors.

ContractError
 ├── UnknownMessageType      the type is not in the registry
 ├── UnsupportedSchemaVersion the major version is not one this consumer reads
 └── InvalidMessage          not JSON, not an envelope, or the payload fails validation
"""

from __future__ import annotations


class ContractError(ValueError):
    """A message that this consumer cannot accept; ``reason`` is a short code for the DLQ."""

    reason = "invalid"


class UnknownMessageType(ContractError):
    reason = "unknown_type"


class UnsupportedSchemaVersion(ContractError):
    reason = "unsupported_schema_version"


class InvalidMessage(ContractError):
    reason = "invalid_payload"
