"""Every registered message survives a round trip; v1 readers tolerate additions."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hyperinfer.contracts import Envelope, Priority, new_event_id
from hyperinfer.contracts.errors import (
    ContractError,
    InvalidMessage,
    UnknownMessageType,
    UnsupportedSchemaVersion,
)
from hyperinfer.contracts.examples import minimal_payload
from hyperinfer.contracts.registry import MESSAGES, MessageSpec, decode_envelope, spec_for

SPECS = pytest.mark.parametrize("spec", MESSAGES, ids=lambda s: f"{s.type}.v{s.version}")


def _wire(spec: MessageSpec, **extra: Any) -> dict[str, Any]:
    data = spec.model.model_validate(minimal_payload(spec.model))
    envelope = Envelope[spec.model](  # type: ignore[name-defined]
        type=spec.type, schema_version=spec.version, source="test", tenant="team-1", data=data
    )
    return json.loads(envelope.model_dump_json()) | extra


@SPECS
def test_round_trip_keeps_every_field(spec: MessageSpec) -> None:
    wire = _wire(spec)
    decoded = decode_envelope(json.dumps(wire))
    assert isinstance(decoded.data, spec.model)
    assert json.loads(decoded.model_dump_json()) == wire


@SPECS
def test_v1_reader_ignores_fields_added_later(spec: MessageSpec) -> None:
    wire = _wire(spec, added_in_v1_5="envelope extra")
    wire["data"]["added_in_v1_5"] = {"nested": [1, 2]}
    decoded = decode_envelope(json.dumps(wire).encode())
    assert decoded.id == wire["id"]
    assert not hasattr(decoded.data, "added_in_v1_5")
    assert decoded.data == spec.model.model_validate(minimal_payload(spec.model))


def test_unknown_major_is_refused_with_a_reason() -> None:
    wire = _wire(spec_for("usage.recorded"), schema_version=2)
    with pytest.raises(UnsupportedSchemaVersion, match=r"usage\.recorded has no schema version 2"):
        decode_envelope(json.dumps(wire))


def test_unknown_type_is_refused() -> None:
    wire = _wire(spec_for("usage.recorded"), type="usage.teleported")
    with pytest.raises(UnknownMessageType, match=r"usage\.teleported"):
        decode_envelope(json.dumps(wire))


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"[]", b'{"type": "usage.recorded"}', b"\xff\xfe"],
    ids=["empty", "text", "array", "no-data", "binary"],
)
def test_garbage_is_an_invalid_message_not_a_crash(raw: bytes) -> None:
    with pytest.raises(InvalidMessage):
        decode_envelope(raw)


def test_invalid_payload_names_the_field() -> None:
    wire = _wire(spec_for("usage.recorded"))
    wire["data"]["prompt_tokens"] = -5
    with pytest.raises(InvalidMessage, match="prompt_tokens"):
        decode_envelope(json.dumps(wire))


def test_contract_errors_share_one_base() -> None:
    for error in (InvalidMessage, UnknownMessageType, UnsupportedSchemaVersion):
        assert issubclass(error, ContractError)


def test_event_ids_are_uuid7_and_sort_by_time() -> None:
    ids = [new_event_id() for _ in range(200)]
    parsed = [uuid.UUID(i) for i in ids]
    assert {u.version for u in parsed} == {7}
    assert {u.variant for u in parsed} == {uuid.RFC_4122}
    millis = [u.int >> 80 for u in parsed]
    assert millis == sorted(millis)
    assert len(set(ids)) == len(ids)


def test_envelope_defaults() -> None:
    env = Envelope[dict[str, int]](type="t", source="s", data={"a": 1})
    assert env.priority is Priority.NORMAL
    assert env.schema_version == 1
    assert env.time.tzinfo is not None


def test_registry_has_one_spec_per_type_and_version() -> None:
    keys = [(s.type, s.version) for s in MESSAGES]
    assert len(keys) == len(set(keys))
