"""From stream entries to ledger events: validate, refuse with a reason, dedupe.

One stream entry holds the JSON of an ``Envelope[UsageRecorded]`` in field
``envelope`` and may carry ``traceparent``. An entry is refused (dead-lettered, then
acknowledged) when it is not such an envelope, names another type or an unknown
major version, fails validation, holds a value PostgreSQL cannot store, starts in the
future beyond the allowed clock skew, is older than raw retention (its request id may
no longer be remembered, so it could double-count), or was delivered too often.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from hyperinfer.contracts import Envelope, names
from hyperinfer.contracts.usage.v1 import EVENT_RECORDED, UsageRecorded
from pydantic import ValidationError

SCHEMA_VERSION = 1
ENVELOPE_FIELD = names.USAGE_STREAM_FIELD.encode()
TRACEPARENT_FIELD = b"traceparent"
_UsageEnvelope = Envelope[UsageRecorded]
_INT64 = 2**63 - 1
_INT32 = 2**31 - 1
_BIG_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_micros",
    "reserved_tokens",
    "reserved_cost_micros",
)
_TEXT_FIELDS = (
    "request_id",
    "team_id",
    "key_id",
    "user_id",
    "alias",
    "model",
    "backend_id",
    "provider",
    "error_type",
    "price_version",
)

StreamEntry = tuple[bytes, Mapping[bytes, bytes] | None]


@dataclass(frozen=True, slots=True)
class LedgerEvent:
    """One valid usage event and where it came from."""

    entry_id: bytes
    usage: UsageRecorded
    event_id: str
    source: str
    traceparent: str | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """An entry that goes to the dead-letter stream, with why."""

    entry_id: bytes
    reason: str
    detail: str
    fields: Mapping[bytes, bytes] = field(default_factory=dict)
    attempts: int = 0


@dataclass
class Intake:
    """A batch sorted out: unique events to write, refusals, and every id to acknowledge."""

    events: list[LedgerEvent] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    ack_ids: list[bytes] = field(default_factory=list)
    duplicates: int = 0


@dataclass(frozen=True)
class IntakeRules:
    now: datetime
    max_skew: timedelta
    retention: timedelta | None
    max_deliveries: int


def sort_batch(
    entries: Iterable[StreamEntry], deliveries: Mapping[bytes, int], rules: IntakeRules
) -> Intake:
    """Decode every entry; the first of several entries with one request id wins."""
    out = Intake()
    seen: set[str] = set()
    for entry_id, fields in entries:
        out.ack_ids.append(entry_id)
        result = decode_entry(entry_id, fields, deliveries.get(entry_id, 1), rules)
        if isinstance(result, Rejected):
            out.rejected.append(result)
        elif result.usage.request_id in seen:
            out.duplicates += 1
        else:
            seen.add(result.usage.request_id)
            out.events.append(result)
    return out


def decode_entry(
    entry_id: bytes, fields: Mapping[bytes, bytes] | None, delivered: int, rules: IntakeRules
) -> LedgerEvent | Rejected:
    if fields is None:  # trimmed from the stream before it was recorded: the usage is gone
        return Rejected(entry_id, "trimmed", "the entry was trimmed before it was recorded")
    if not fields:
        return Rejected(entry_id, "invalid_payload", "entry has no fields")
    if delivered > rules.max_deliveries:
        detail = f"delivered {delivered} times (limit {rules.max_deliveries})"
        return Rejected(entry_id, "max_deliveries", detail, fields, delivered)
    raw = fields.get(ENVELOPE_FIELD)
    if raw is None:
        return Rejected(entry_id, "invalid_payload", "no 'envelope' field", fields, delivered)
    try:
        env = _UsageEnvelope.model_validate_json(raw)
    except ValidationError as exc:
        reason, detail = _why_invalid(raw, exc)
        return Rejected(entry_id, reason, detail, fields, delivered)
    if env.type != EVENT_RECORDED or env.schema_version != SCHEMA_VERSION:
        reason, detail = _wrong_kind(env.type, env.schema_version)
        return Rejected(entry_id, reason, detail, fields, delivered)
    problem = storable_problem(env.data) or _timing_problem(env.data, rules)
    if problem is not None:
        reason, detail = problem
        return Rejected(entry_id, reason, detail, fields, delivered)
    traceparent = fields.get(TRACEPARENT_FIELD)
    tp = traceparent.decode("ascii", "replace") if traceparent else env.traceparent
    return LedgerEvent(entry_id, env.data, env.id, env.source, tp)


def _why_invalid(raw: bytes, exc: ValidationError) -> tuple[str, str]:
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        return "invalid_payload", f"not JSON: {err}"
    if isinstance(body, dict):
        kind, version = body.get("type"), body.get("schema_version", SCHEMA_VERSION)
        typed = isinstance(kind, str) and type(version) is int
        if typed and (kind != EVENT_RECORDED or version != SCHEMA_VERSION):
            return _wrong_kind(str(kind), int(version))
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "body"
    count = exc.error_count()
    return "invalid_payload", f"{where}: {first.get('msg', 'invalid')} ({count} error(s))"


def _wrong_kind(kind: str, version: int) -> tuple[str, str]:
    if kind != EVENT_RECORDED:
        return "unknown_type", f"type {kind!r} is not {EVENT_RECORDED}"
    return "unsupported_schema_version", f"{kind} schema_version {version} is not {SCHEMA_VERSION}"


def storable_problem(usage: UsageRecorded) -> tuple[str, str] | None:
    """Values the contract allows but PostgreSQL cannot hold (or that would poison sums)."""
    for name in _BIG_FIELDS:
        if getattr(usage, name) > _INT64:
            return "invalid_payload", f"{name} is larger than a 64-bit integer"
    if not -_INT32 <= usage.http_status <= _INT32 or usage.attempts > _INT32:
        return "invalid_payload", "http_status or attempts is out of range"
    for name in ("latency_ms", "ttft_ms"):
        value = getattr(usage, name)
        if value is not None and not math.isfinite(value):
            return "invalid_payload", f"{name} is not a finite number"
    for name in _TEXT_FIELDS:
        value = getattr(usage, name)
        if value is not None and "\x00" in value:
            return "invalid_payload", f"{name} contains a NUL character"
    return None


def _timing_problem(usage: UsageRecorded, rules: IntakeRules) -> tuple[str, str] | None:
    if usage.started_at > rules.now + rules.max_skew:
        return "invalid_payload", f"started_at {usage.started_at.isoformat()} is in the future"
    if rules.retention is not None and usage.started_at < rules.now - rules.retention:
        detail = f"started_at {usage.started_at.isoformat()} is older than raw retention"
        return "expired", detail
    return None
