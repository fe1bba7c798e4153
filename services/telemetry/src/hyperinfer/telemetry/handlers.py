"""The spend API's work as plain functions: who is asking, what they may see, the answer.

Access: the master admin key (``HYPERINFER_ADMIN_KEY``) sees every team. Any other key is
resolved against the local config snapshot (keyed hash, no database) and must carry the
admin scope (``team_admin_scope``, default ``admin``, as the config service); what it may
see is the snapshot's ``KeyConfig.admin_scope``, which the config service derives from
the key's user exactly as its own admin API does:

- ``platform`` (the key of a user with role ``admin``): every team, like the master key;
- ``team`` (the key of its team's ``team_admin``): every query is pinned to that team —
  naming another team is refused, and group/top results never include one;
- None (a ``member``'s key, a key without a user, a snapshot from a config service that
  predates the field): no access at all.
"""

from __future__ import annotations

import base64
import csv
import hmac
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

import orjson
from hyperinfer.client.keys import hash_api_key
from hyperinfer.contracts.config.v1 import ConfigSnapshot
from hyperinfer.telemetry.domain import (
    KEY_DIMENSIONS,
    Dimension,
    Metric,
    RollupHorizons,
    UsageQuery,
    parse_group_by,
    resolve_period,
)
from hyperinfer.telemetry.errors import ExportTooLarge, Forbidden, InvalidQuery, Unauthorized

MAX_PAGE = 1000
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
METRIC_COLUMNS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_micros",
    "latency_ms_avg",
    "latency_ms_p50",
    "latency_ms_p95",
    "latency_ms_p99",
)


class SpendStore(Protocol):
    async def grouped(self, query: UsageQuery, limit: int, offset: int) -> list[dict[str, Any]]: ...

    async def totals(self, query: UsageQuery) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Principal:
    """Who asks: ``team_id`` None is the master admin or a platform admin (every team)."""

    name: str
    team_id: str | None


@dataclass(frozen=True)
class QueryParams:
    """A request's raw parameters, before policy."""

    start: datetime | None = None
    end: datetime | None = None
    group_by: str = "team"
    team_id: str | None = None
    key_id: str | None = None
    model: str | None = None
    backend_id: str | None = None
    limit: int = 100
    cursor: str | None = None


# --- who is asking ---------------------------------------------------------------------
def bearer_token(authorization: str | None, api_key: str | None) -> str | None:
    """The key from ``Authorization: Bearer <key>`` or ``X-API-Key``."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return api_key.strip() if api_key and api_key.strip() else None


def authenticate(
    token: str | None, admin_key: str, snapshot: ConfigSnapshot, scope: str, now: datetime
) -> Principal:
    if not token:
        raise Unauthorized("an admin key is required (Authorization: Bearer <key>)")
    if hmac.compare_digest(token.encode(), admin_key.encode()):
        return Principal("admin", None)
    key = snapshot.keys.get(hash_api_key(token, snapshot.key_hash_salt))
    usable = key is not None and key.active and (key.expires_at is None or key.expires_at > now)
    # the config service decided what the key administers (admin_scope); no scope, no access
    if key is None or not usable or scope not in key.scopes or key.admin_scope is None:
        raise Unauthorized("this key is not an admin key")
    return Principal(f"key:{key.id}", None if key.admin_scope == "platform" else key.team_id)


# --- what they may see -----------------------------------------------------------------
def build_query(
    principal: Principal,
    params: QueryParams,
    now: datetime,
    *,
    order_by: Metric | None = None,
    horizons: RollupHorizons = RollupHorizons(),
) -> UsageQuery:
    """The query to run: period resolved, team pinned for a team admin, page decoded."""
    try:
        start, end = resolve_period(params.start, params.end, now)
        group_by = parse_group_by(params.group_by)
    except ValueError as exc:
        raise InvalidQuery(str(exc)) from None
    if not 1 <= params.limit <= MAX_PAGE:
        raise InvalidQuery(f"limit must be between 1 and {MAX_PAGE}")
    query = UsageQuery(
        start=start,
        end=end,
        group_by=group_by,
        team_id=params.team_id,
        key_id=params.key_id,
        model=params.model,
        backend_id=params.backend_id,
        order_by=order_by,
        limit=params.limit,
        offset=decode_cursor(params.cursor),
    )
    problem = horizons.problem(query.segments(), now)
    if problem is not None:
        raise InvalidQuery(problem)
    return pin_team(principal, query)


def pin_team(principal: Principal, query: UsageQuery) -> UsageQuery:
    if principal.team_id is None:
        return query
    if query.team_id is not None and query.team_id != principal.team_id:
        raise Forbidden("a team admin sees only their own team's usage")
    return replace(query, team_id=principal.team_id)


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        offset = int(value)
    except (ValueError, UnicodeDecodeError):
        raise InvalidQuery("cursor is not one this API returned") from None
    if kind != "o" or offset < 0:
        raise InvalidQuery("cursor is not one this API returned")
    return offset


# --- answers -----------------------------------------------------------------------------
async def usage_page(store: SpendStore, query: UsageQuery) -> dict[str, Any]:
    """One page of groups, the totals of the whole period, and the next page's cursor."""
    rows = await store.grouped(query, query.limit + 1, query.offset)
    more = len(rows) > query.limit
    items = rows[: query.limit]
    return {
        "start": query.start,
        "end": query.end,
        "group_by": list(query.group_by),
        "filters": _filters(query),
        "items": items,
        "totals": await store.totals(query),
        "next_cursor": encode_cursor(query.offset + query.limit) if more else None,
    }


async def top_consumers(store: SpendStore, query: UsageQuery) -> dict[str, Any]:
    """The largest groups by ``query.order_by``."""
    rows = await store.grouped(query, query.limit, 0)
    return {
        "start": query.start,
        "end": query.end,
        "by": query.group_by[0] if query.group_by else None,
        "metric": query.order_by,
        "filters": _filters(query),
        "items": rows,
    }


async def export_csv(store: SpendStore, query: UsageQuery, max_rows: int) -> str:
    """Every group of the period as CSV (header first); refuses more than ``max_rows``."""
    rows = await store.grouped(query, max_rows + 1, 0)
    if len(rows) > max_rows:
        raise ExportTooLarge(
            f"more than {max_rows} rows; narrow the period, the filters or the grouping"
        )
    return render_csv(rows, group_columns(query.group_by))


def group_columns(group_by: Iterable[Dimension]) -> list[str]:
    return [KEY_DIMENSIONS.get(d, d) for d in group_by]


def render_csv(rows: list[dict[str, Any]], groups: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*groups, *METRIC_COLUMNS])
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in (*groups, *METRIC_COLUMNS)])
    return out.getvalue()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    text = str(value)
    if isinstance(value, str) and text.startswith(_FORMULA_STARTS):
        return "'" + text  # a name must never run as a spreadsheet formula
    return text


def _filters(query: UsageQuery) -> dict[str, str]:
    pairs = {
        "team_id": query.team_id,
        "key_id": query.key_id,
        "model": query.model,
        "backend_id": query.backend_id,
    }
    return {k: v for k, v in pairs.items() if v is not None}


# --- dead letters (master or platform admins only: raw payloads cross team lines) --------
_STREAM_ID = re.compile(r"^\d{1,20}(-\d{1,20})?$")


class DeadLetterStore(Protocol):
    async def dead_letters(self, count: int, after: str | None) -> list[Any]: ...

    async def replay(self, dlq_id: str) -> bytes | None: ...


def require_master(principal: Principal) -> None:
    if principal.team_id is not None:
        raise Forbidden("only platform admins may read or replay dead letters")


def stream_id(value: str, what: str) -> str:
    if not _STREAM_ID.match(value):
        raise InvalidQuery(f"{what} {value!r} is not a stream id such as 1700000000000-0")
    return value


async def list_dead_letters(
    store: DeadLetterStore, limit: int, after: str | None
) -> dict[str, Any]:
    """One page of dead letters, oldest first, and where the next page starts."""
    entries = await store.dead_letters(limit + 1, stream_id(after, "after") if after else None)
    items = [describe_dead_letter(entry_id, fields) for entry_id, fields in entries[:limit]]
    more = len(entries) > limit
    return {"items": items, "next_after": items[-1]["id"] if more and items else None}


def describe_dead_letter(entry_id: bytes, fields: dict[bytes, bytes]) -> dict[str, Any]:
    try:
        data = orjson.loads(fields[b"envelope"])["data"]
    except (KeyError, TypeError, orjson.JSONDecodeError):
        data = {}
    return {
        "id": entry_id.decode(),
        "original_id": data.get("original_id"),
        "reason": data.get("reason", fields.get(b"reason", b"").decode("utf-8", "replace")),
        "detail": data.get("detail"),
        "attempts": data.get("attempts"),
        "failed_at": data.get("failed_at"),
        "payload": str(data.get("original_payload", ""))[:2000],
    }


async def replay_dead_letters(store: DeadLetterStore, ids: list[str]) -> dict[str, Any]:
    """Put each named dead letter back on the usage stream (validated again on the way)."""
    replayed, missing = [], []
    for dlq_id in ids:
        new_id = await store.replay(stream_id(dlq_id, "id"))
        if new_id is None:
            missing.append(dlq_id)
        else:
            replayed.append({"id": dlq_id, "stream_id": new_id.decode()})
    return {"replayed": replayed, "missing": missing}
