"""HyperInfer message contracts: the envelope, every name, and versioned payload models.

Contracts are a public API: within a major version only optional fields are added;
consumers ignore fields they do not know.
"""

from hyperinfer.contracts import names
from hyperinfer.contracts.envelope import Envelope, RawEnvelope, new_event_id, utc_now
from hyperinfer.contracts.errors import (
    ContractError,
    InvalidMessage,
    UnknownMessageType,
    UnsupportedSchemaVersion,
)
from hyperinfer.contracts.priority import Priority
from hyperinfer.contracts.registry import MESSAGES, MessageSpec, decode_envelope, spec_for

__all__ = [
    "MESSAGES",
    "ContractError",
    "Envelope",
    "InvalidMessage",
    "MessageSpec",
    "Priority",
    "RawEnvelope",
    "UnknownMessageType",
    "UnsupportedSchemaVersion",
    "decode_envelope",
    "names",
    "new_event_id",
    "spec_for",
    "utc_now",
]
