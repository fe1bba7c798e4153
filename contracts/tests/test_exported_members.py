"""The public surface of hyperinfer.contracts is deliberate: this test pins it."""

from __future__ import annotations

import hyperinfer.contracts as contracts

EXPECTED = {
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
}


def test_all_is_exactly_the_public_surface() -> None:
    assert set(contracts.__all__) == EXPECTED


def test_every_exported_name_exists() -> None:
    for name in contracts.__all__:
        assert getattr(contracts, name) is not None
