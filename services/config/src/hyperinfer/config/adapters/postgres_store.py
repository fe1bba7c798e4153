"""Governance data in PostgreSQL: every SQL statement of the config service lives here.

Version order equals commit order: ``commit_change`` (the SQL function
``config_commit`` of migration 0011) locks the single ``config_state`` row *before* it
takes ``nextval('config_version_seq')``, and the lock is held until
the transaction commits. So when a reader sees version N in ``config_state``, every
change numbered N or lower has committed, and ``read_state`` (one statement, so one
MVCC snapshot) sees exactly those changes.

SQL text is assembled from the identifiers in ``TABLES`` (constants of this module)
and numbered placeholders only; every value travels as a bind parameter.
"""
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from hyperinfer.config.domain import GovernanceState, Row
from hyperinfer.config.errors import Conflict, InvalidField, Unavailable
from hyperinfer.config.ports import AuditRecord, PageQuery

_VERSIONED = ("version", "created_at", "updated_at")
_CURRENT_VERSION = "SELECT coalesce((SELECT version FROM config_state), 0)"


@dataclass(frozen=True)
class Table:
    """How one kind is stored: table, key column, columns, filters, team scoping."""

    name: str
    columns: tuple[str, ...]
    key: str = "id"
    json_columns: frozenset[str] = frozenset()
    filters: dict[str, str] = field(default_factory=dict)
    team_scope: str | None = None
    descending: bool = False
    int_key: bool = False

    def where_filter(self, name: str) -> str:
        return self.filters[name]


TABLES: dict[str, Table] = {
    "team": Table(
        "teams",
        ("id", "name", "budget_micros", "failure_policy", *_VERSIONED),
        filters={"name": "name = {}", "failure_policy": "failure_policy = {}"},
        team_scope="id = {}",
    ),
    "user": Table(
        "users",
        ("id", "email", "team_id", "role", *_VERSIONED),
        filters={"team_id": "team_id = {}", "email": "email = {}", "role": "role = {}"},
        team_scope="team_id = {}",
    ),
    "key": Table(
        "api_keys",
        (
            "id",
            "key_hash",
            "key_prefix",
            "name",
            "team_id",
            "user_id",
            "scopes",
            "expires_at",
            "active",
            "revoked_at",
            "rotated_at",
            *_VERSIONED,
        ),
        filters={
            "team_id": "team_id = {}",
            "user_id": "user_id = {}",
            "name": "name = {}",
            "active": "active = {}",
        },
        team_scope="team_id = {}",
    ),
    "alias": Table(
        "model_aliases",
        ("id", "name", "team_id", "targets", *_VERSIONED),
        json_columns=frozenset({"targets"}),
        filters={
            "team_id": "team_id = {}",
            "name": "name = {}",
            "global": "team_id IS NULL",
            "team_only": "team_id IS NOT NULL",
        },
        team_scope="(team_id = {} OR team_id IS NULL)",
    ),
    "quota": Table(
        "quotas",
        (
            "id",
            "scope",
            "subject_id",
            "team_id",
            "rpm",
            "tpm",
            "budget_micros",
            "soft_limit_micros",
            "grace_micros",
            "budget_period",
            *_VERSIONED,
        ),
        filters={
            "team_id": "team_id = {}",
            "scope": "scope = {}",
            "subject_id": "subject_id = {}",
        },
        team_scope="team_id = {}",
    ),
    "backend": Table(
        "backends",
        (
            "id",
            "name",
            "kind",
            "base_url",
            "models",
            "weight",
            "tags",
            "timeout_s",
            "credentials_ciphertext",
            *_VERSIONED,
        ),
        filters={"name": "name = {}", "kind": "kind = {}", "tag": "{} = ANY(tags)"},
    ),
    "price": Table(
        "model_prices",
        ("model", "input_per_mtok_micros", "output_per_mtok_micros", "version", "updated_at"),
        key="model",
        filters={"model": "model = {}"},
    ),
    "rule": Table(
        "routing_rules",
        ("id", "name", "alias", "strategy", "weights", *_VERSIONED),
        json_columns=frozenset({"weights"}),
        filters={"name": "name = {}", "alias": "alias = {}", "strategy": "strategy = {}"},
    ),
    "audit": Table(
        "audit_log",
        (
            "id",
            "at",
            "actor",
            "actor_team_id",
            "action",
            "target_type",
            "target_id",
            "team_id",
            "before",
            "after",
            "config_version",
        ),
        json_columns=frozenset({"before", "after"}),
        filters={
            "team_id": "team_id = {}",
            "target_type": "target_type = {}",
            "target_id": "target_id = {}",
            "actor": "actor = {}",
            "action": "action = {}",
            "since_version": "config_version >= {}",
        },
        team_scope="team_id = {}",
        descending=True,
        int_key=True,
    ),
}

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


def _decode(table: Table, record: asyncpg.Record) -> Row:
    row = dict(record)
    for name in table.json_columns:
        if isinstance(row.get(name), str):
            row[name] = orjson.loads(row[name])
    return row


def _encode(table: Table, name: str, value: Any) -> Any:
    if name in table.json_columns and value is not None:
        return orjson.dumps(value).decode()
    return value


def _placeholder(table: Table, name: str, n: int) -> str:
    return f"${n}::jsonb" if name in table.json_columns else f"${n}"


class _Where:
    """A WHERE clause built from templates, with numbered parameters."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.args: list[Any] = []

    def add(self, template: str, value: Any = None) -> None:
        if "{}" in template:
            self.args.append(value)
            template = template.format(f"${len(self.args)}")
        self.parts.append(template)

    def sql(self) -> str:
        return " WHERE " + " AND ".join(self.parts) if self.parts else ""


def _page_where(table: Table, query: PageQuery) -> _Where:
    where = _Where()
    for name, value in query.filters.items():
        where.add(table.where_filter(name), value)
    if query.team_id is not None and table.team_scope is not None:
        where.add(table.team_scope, query.team_id)
    return where


class PostgresTransaction:
    """Statements inside one transaction (see ``Transaction`` in ``ports``)."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def get(self, kind: str, key: str, *, lock: bool = False) -> Row | None:
        table = TABLES[kind]
        sql = f"SELECT * FROM {table.name} WHERE {table.key} = $1"
        sql += " FOR UPDATE" if lock else ""
        record = await self._conn.fetchrow(sql, key)
        return None if record is None else _decode(table, record)

    async def find(self, kind: str, **where: Any) -> list[Row]:
        table = TABLES[kind]
        clause = _Where()
        for name, value in where.items():
            clause.add(f"{name} = {{}}" if value is not None else f"{name} IS NULL", value)
        sql = f"SELECT * FROM {table.name}{clause.sql()}"
        records = await self._conn.fetch(sql, *clause.args)
        return [_decode(table, r) for r in records]

    async def insert(self, kind: str, row: Row) -> Row:
        table = TABLES[kind]
        names = list(row)
        marks = ", ".join(_placeholder(table, n, i) for i, n in enumerate(names, 1))
        sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({marks}) RETURNING *"
        values = [_encode(table, n, row[n]) for n in names]
        record = await _run(self._conn.fetchrow(sql, *values))
        assert record is not None
        return _decode(table, record)

    async def update(self, kind: str, key: str, values: Row) -> Row:
        table = TABLES[kind]
        names = list(values)
        sets = [f"{n} = {_placeholder(table, n, i)}" for i, n in enumerate(names, 1)]
        sets += ["version = version + 1", "updated_at = now()"]
        sql = (
            f"UPDATE {table.name} SET {', '.join(sets)} "
            f"WHERE {table.key} = ${len(names) + 1} RETURNING *"
        )
        args = [_encode(table, n, values[n]) for n in names]
        record = await _run(self._conn.fetchrow(sql, *args, key))
        assert record is not None
        return _decode(table, record)

    async def delete(self, kind: str, key: str) -> None:
        table = TABLES[kind]
        await _run(self._conn.execute(f"DELETE FROM {table.name} WHERE {table.key} = $1", key))

    async def backends(self, ids: list[str]) -> dict[str, Row]:
        records = await self._conn.fetch("SELECT * FROM backends WHERE id = ANY($1)", ids)
        return {r["id"]: _decode(TABLES["backend"], r) for r in records}

    async def aliases_using(self, backend_id: str) -> list[str]:
        records = await self._conn.fetch(
            "SELECT id FROM model_aliases WHERE targets @> $1::jsonb ORDER BY id",
            orjson.dumps([{"backend_id": backend_id}]).decode(),
        )
        return [r["id"] for r in records]

    async def set_sequence_past(self, past: int) -> None:
        await self._conn.execute(
            "SELECT setval('config_version_seq',"
            " GREATEST($1, (SELECT last_value FROM config_version_seq)))",
            past,
        )

    async def commit_change(self, record: AuditRecord, *, prices: bool = False) -> int:
        # config_commit (migration 0011) locks config_state before nextval: versions
        # follow commit order, since the lock is held until this transaction commits
        version = await self._conn.fetchval(
            "SELECT config_commit($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9)",
            record.actor,
            record.actor_team_id,
            record.action,
            record.target_type,
            record.target_id,
            record.team_id,
            _json_or_none(record.before),
            _json_or_none(record.after),
            prices,
        )
        return int(version)


def _json_or_none(value: Row | None) -> str | None:
    return None if value is None else orjson.dumps(value, default=str).decode()


async def _run(awaitable: Any) -> Any:
    """Turn constraint violations into the service's errors (the transaction rolls back)."""
    try:
        return await awaitable
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(f"already exists: {_constraint_detail(exc)}") from None
    except asyncpg.ForeignKeyViolationError as exc:
        detail = _constraint_detail(exc)
        raise InvalidField(f"refers to something that does not exist: {detail}") from None
    except asyncpg.CheckViolationError as exc:
        raise InvalidField(f"value out of range: {_constraint_detail(exc)}") from None


def _constraint_detail(exc: asyncpg.PostgresError) -> str:
    return str(getattr(exc, "detail", None) or getattr(exc, "constraint_name", None) or exc)


class PostgresGovernanceStore:
    """The governance store on an asyncpg pool."""

    def __init__(self, pool: Callable[[], asyncpg.Pool]) -> None:
        self._pool = pool  # called per use: the pool exists once the service has connected

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        async with self._connection() as conn, conn.transaction():
            yield PostgresTransaction(conn)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        try:
            pool = self._pool()
            conn = await pool.acquire(timeout=5)
        except (OSError, TimeoutError, asyncpg.PostgresConnectionError) as exc:
            raise Unavailable(f"PostgreSQL unavailable: {type(exc).__name__}") from None
        try:
            yield conn
        except asyncpg.DataError as exc:  # NUL in text, a number out of range, ...
            raise InvalidField(f"a value PostgreSQL cannot store: {exc}") from None
        finally:
            await pool.release(conn)

    async def get(self, kind: str, key: str) -> Row | None:
        async with self._connection() as conn:
            return await PostgresTransaction(conn).get(kind, key)

    async def page(self, kind: str, query: PageQuery) -> tuple[list[Row], int]:
        table = TABLES[kind]
        where = _page_where(table, query)
        async with self._connection() as conn:
            count_sql = f"SELECT count(*) FROM {table.name}{where.sql()}"
            total = int(await conn.fetchval(count_sql, *where.args))
            if query.after is not None:
                after: Any = int(query.after) if table.int_key else query.after
                where.add(f"{table.key} {'<' if table.descending else '>'} {{}}", after)
            order = f"{table.key} {'DESC' if table.descending else 'ASC'} LIMIT {int(query.limit)}"
            sql = f"SELECT * FROM {table.name}{where.sql()} ORDER BY {order}"
            records = await conn.fetch(sql, *where.args)
        return [_decode(table, r) for r in records], total

    async def key_by_hash(self, key_hash: str) -> tuple[Row, Row | None] | None:
        async with self._connection() as conn:
            key = await conn.fetchrow("SELECT * FROM api_keys WHERE key_hash = $1", key_hash)
            if key is None:
                return None
            user = None
            if key["user_id"] is not None:
                user = await conn.fetchrow("SELECT * FROM users WHERE id = $1", key["user_id"])
        return dict(key), None if user is None else dict(user)

    async def read_state(self) -> GovernanceState:
        async with self._connection() as conn:
            record = await conn.fetchrow(_STATE)  # one statement: one consistent view
        assert record is not None
        keys = [_with_time(k, "expires_at") for k in orjson.loads(record["keys"])]
        return GovernanceState(
            version=int(record["version"]),
            price_version=int(record["price_version"]),
            teams=orjson.loads(record["teams"]),
            keys=keys,
            aliases=orjson.loads(record["aliases"]),
            quotas=orjson.loads(record["quotas"]),
            backends=orjson.loads(record["backends"]),
            prices=orjson.loads(record["prices"]),
            rules=orjson.loads(record["rules"]),
            users=orjson.loads(record["users"]),
        )

    async def current_version(self) -> int:
        async with self._connection() as conn:
            return int(await conn.fetchval(_CURRENT_VERSION))

    async def advance_version(self, past: int) -> int:
        async with self.transaction() as tx:
            await tx.set_sequence_past(past)
            record = AuditRecord(
                "system", None, "config.resync", "config", "config", None, None, {"past": past}
            )
            return await tx.commit_change(record)


def _rows(kind: str, where: str = "") -> str:
    table = TABLES[kind]
    return (
        f"(SELECT coalesce(json_agg(t ORDER BY t.{table.key}), '[]'::json)"
        f" FROM {table.name} t {where})::text"
    )


# Everything the snapshot is built from, in one statement (one MVCC snapshot).
_STATE = (
    "SELECT coalesce((SELECT version FROM config_state), 0) AS version,"
    " coalesce((SELECT price_version FROM config_state), 0) AS price_version,"
    f" {_rows('team')} AS teams,"
    f" {_rows('key', 'WHERE t.active AND t.revoked_at IS NULL')} AS keys,"
    f" {_rows('alias')} AS aliases,"
    f" {_rows('quota')} AS quotas,"
    f" {_rows('backend')} AS backends,"
    f" {_rows('price')} AS prices,"
    f" {_rows('rule')} AS rules,"
    " (SELECT coalesce(json_agg(json_build_object('id', u.id, 'role', u.role,"
    " 'team_id', u.team_id) ORDER BY u.id), '[]'::json) FROM users u)::text AS users"
)


def _with_time(row: Row, name: str) -> Row:
    """JSON carries times as text; the domain compares them."""
    if isinstance(row.get(name), str):
        row[name] = datetime.fromisoformat(row[name])
    return row
