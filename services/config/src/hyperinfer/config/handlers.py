"""The admin API's use cases as plain async functions.

Each takes its dependencies (``Deps``), the caller (``Principal``) and a validated
request, and returns a resource. A change runs in one transaction that checks the
caller's rights and the object's version, writes the object, takes the next config
version and writes the audit entry; then, after commit, the snapshot at that version
is published before the caller gets its answer (bounded by ``publish_timeout_s``;
a late publish is finished by the repair loop).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from hyperinfer.client.credentials import CredentialsCipher
from hyperinfer.client.keys import generate_api_key, hash_api_key, key_hint
from hyperinfer.config import domain
from hyperinfer.config.domain import Principal, Row
from hyperinfer.config.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidField,
    NotFound,
    Unauthenticated,
)
from hyperinfer.config.ports import AuditRecord, GovernanceStore, PageQuery, Transaction
from hyperinfer.config.resources import (
    Alias,
    AliasCreate,
    AliasPatch,
    ApiKey,
    AuditEntry,
    Backend,
    BackendCreate,
    BackendPatch,
    KeyCreate,
    KeyCreated,
    KeyLookup,
    KeyPatch,
    Page,
    Price,
    PriceSet,
    Quota,
    QuotaCreate,
    QuotaPatch,
    RoutingRule,
    RuleCreate,
    RulePatch,
    Team,
    TeamCreate,
    TeamPatch,
    User,
    UserCreate,
    UserPatch,
    WhoAmI,
)
from hyperinfer.contracts import utc_now
from hyperinfer.contracts.config.v1 import ConfigSnapshot
from hyperinfer.runtime.logs import get_logger
from pydantic import BaseModel

log = get_logger(__name__)
ItemT = TypeVar("ItemT", bound=BaseModel)
Publish = Callable[[int, list[str]], Awaitable[None]]


@dataclass(frozen=True)
class Deps:
    """What the handlers need; built once in ``create_app``."""

    store: GovernanceStore
    publish: Publish
    cipher: CredentialsCipher
    key_hash_salt: str
    admin_key: str
    internal_key: str
    publish_timeout_s: float = 2.0
    page_size: int = 50
    max_page_size: int = 500
    on_publish_failed: Callable[[], None] = field(default=lambda: None)
    clock: Callable[[], datetime] = utc_now


@dataclass(frozen=True)
class Changed(Generic[ItemT]):
    """A committed change: the object, the config version, whether it is in Redis yet."""

    item: ItemT
    config_version: int | None
    published: bool


MODELS: dict[str, type[BaseModel]] = {
    "team": Team,
    "user": User,
    "key": ApiKey,
    "alias": Alias,
    "quota": Quota,
    "backend": Backend,
    "price": Price,
    "rule": RoutingRule,
    "audit": AuditEntry,
}


# --- shared steps --------------------------------------------------------------------
def _model(kind: str, row: Row) -> Any:
    return MODELS[kind].model_validate(domain.public(kind, row))


def _team_of(kind: str, row: Row) -> str | None:
    return str(row["id"]) if kind == "team" else row.get("team_id")


async def _visible(
    tx: Transaction, who: Principal, kind: str, key: str, *, lock: bool = True
) -> Row:
    """The object, locked for the change; 404 when absent or not the caller's to see."""
    row = await tx.get(kind, key, lock=lock)
    if row is None or not domain.can_see(who, _team_of(kind, row)):
        raise NotFound(f"no {kind} {key!r}")
    return row


async def _existing(tx: Transaction, kind: str, key: str, field_name: str) -> Row:
    row = await tx.get(kind, key)
    if row is None:
        raise InvalidField(f"{field_name}: no {kind} {key!r}", field=field_name)
    return row


async def _commit(
    tx: Transaction,
    who: Principal,
    action: str,
    kind: str,
    before: Row | None,
    after: Row | None,
    *,
    prices: bool = False,
) -> int:
    row = after if after is not None else before
    assert row is not None
    table_key = "model" if kind == "price" else "id"
    record = AuditRecord(
        actor=who.actor,
        actor_team_id=who.team_id,
        action=f"{kind}.{action}",
        target_type=kind,
        target_id=str(row[table_key]),
        team_id=_team_of(kind, row),
        before=domain.public(kind, before),
        after=domain.public(kind, after),
    )
    return await tx.commit_change(record, prices=prices)


async def _published(deps: Deps, kind: str, item: ItemT, version: int) -> Changed[ItemT]:
    """Publish the snapshot at ``version`` (bounded wait), then answer."""
    target = getattr(item, "id", None) or getattr(item, "model", None)
    log.info("config changed", extra={"kind": kind, "target": target, "config_version": version})
    try:
        await asyncio.wait_for(deps.publish(version, [kind]), deps.publish_timeout_s)
    except Exception as exc:
        log.warning(
            "config committed but not yet published; the repair loop will publish it",
            extra={"config_version": version, "error": f"{type(exc).__name__}: {exc}"[:300]},
        )
        deps.on_publish_failed()
        return Changed(item, version, published=False)
    return Changed(item, version, published=True)


async def _page(
    deps: Deps,
    who: Principal,
    kind: str,
    filters: dict[str, Any],
    limit: int | None,
    cursor: str | None,
    team_id: str | None = None,
) -> Page[Any]:
    size = min(limit or deps.page_size, deps.max_page_size)
    wanted = {k: v for k, v in filters.items() if v is not None}
    if team_id is not None:  # a filter: exactly this team's objects (refused for other teams)
        wanted["team_id"] = domain.team_filter(who, team_id)
    query = PageQuery(
        filters=wanted,
        team_id=None if who.is_platform_admin else who.team_id,  # what the caller may see
        limit=size + 1,
        after=domain.decode_cursor(cursor),
    )
    if kind == "audit" and query.after is not None and not query.after.isdigit():
        raise BadRequest("malformed cursor; pass next_cursor from the previous page")
    rows, total = await deps.store.page(kind, query)
    items = [_model(kind, r) for r in rows[:size]]
    key = "model" if kind == "price" else "id"
    more = len(rows) > size
    next_cursor = domain.encode_cursor(str(rows[size - 1][key])) if more else None
    return Page[Any](items=items, total=total, limit=size, next_cursor=next_cursor)


async def _get(deps: Deps, who: Principal, kind: str, key: str) -> Any:
    row = await deps.store.get(kind, key)
    if row is None or not domain.can_see(who, _team_of(kind, row)):
        raise NotFound(f"no {kind} {key!r}")
    return _model(kind, row)


# --- who is calling ------------------------------------------------------------------
async def authenticate(deps: Deps, authorization: str | None) -> Principal:
    """``Authorization: Bearer <key>``: the master admin key or an admin-scoped API key."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("send Authorization: Bearer <admin key>")
    if hmac.compare_digest(token.encode(), deps.admin_key.encode()):
        return domain.MASTER
    found = await deps.store.key_by_hash(hash_api_key(token, deps.key_hash_salt))
    if found is None:
        raise Unauthenticated("unknown, revoked or expired key")
    key, user = found
    if not domain.key_usable(key, deps.clock()):
        raise Unauthenticated("unknown, revoked or expired key")
    principal = domain.principal_for_key(key, user, deps.clock())
    if principal is None:
        raise Forbidden("this key may not use the admin API (needs scope admin and an admin user)")
    return principal


def may_sync(deps: Deps, who: Principal | None, internal_key: str | None) -> None:
    """The full snapshot is for platform admins and internal callers (X-Internal-Key)."""
    if internal_key and hmac.compare_digest(internal_key.encode(), deps.internal_key.encode()):
        return
    if who is None:
        raise Unauthenticated("send Authorization: Bearer <admin key> or X-Internal-Key")
    domain.require_platform_admin(who, "read the full config snapshot")


def whoami(who: Principal) -> WhoAmI:
    return WhoAmI(
        actor=who.actor,
        team_id=who.team_id,
        role="admin" if who.is_platform_admin else "team_admin",
    )


# --- teams ---------------------------------------------------------------------------
async def create_team(deps: Deps, who: Principal, body: TeamCreate) -> Changed[Team]:
    domain.require_platform_admin(who, "create teams")
    values = body.model_dump(exclude={"id"})
    async with deps.store.transaction() as tx:
        row = await tx.insert("team", {"id": body.id or domain.new_id("team"), **values})
        version = await _commit(tx, who, "create", "team", None, row)
    return await _published(deps, "team", Team.model_validate(row), version)


async def list_teams(
    deps: Deps, who: Principal, name: str | None, limit: int | None, cursor: str | None
) -> Page[Any]:
    return await _page(deps, who, "team", {"name": name}, limit, cursor)


async def get_team(deps: Deps, who: Principal, team_id: str) -> Team:
    item: Team = await _get(deps, who, "team", team_id)
    return item


async def update_team(
    deps: Deps, who: Principal, team_id: str, body: TeamPatch, if_match: set[int] | None
) -> Changed[Team]:
    domain.require_platform_admin(who, "change teams")
    values = domain.changes(body)
    if values.get("name", "") is None or values.get("failure_policy", "") is None:
        raise InvalidField("name and failure_policy cannot be null")
    async with deps.store.transaction() as tx:
        before = await _visible(tx, who, "team", team_id)
        domain.check_version(before["version"], if_match)
        after = await tx.update("team", team_id, values)
        version = await _commit(tx, who, "update", "team", before, after)
    return await _published(deps, "team", Team.model_validate(after), version)


async def delete_team(
    deps: Deps, who: Principal, team_id: str, if_match: set[int] | None
) -> Changed[Team]:
    domain.require_platform_admin(who, "delete teams")
    async with deps.store.transaction() as tx:
        before = await _visible(tx, who, "team", team_id)
        domain.check_version(before["version"], if_match)
        if await tx.find("key", team_id=team_id, active=True):
            raise Conflict(f"team {team_id!r} still has active keys; revoke them first")
        await tx.delete("team", team_id)
        version = await _commit(tx, who, "delete", "team", before, None)
    return await _published(deps, "team", Team.model_validate(before), version)


# --- users ---------------------------------------------------------------------------
async def create_user(deps: Deps, who: Principal, body: UserCreate) -> Changed[User]:
    domain.validate_user(body.role, body.team_id)
    domain.require_role_grant(who, body.role)
    domain.require_team(who, body.team_id, "create users in")
    async with deps.store.transaction() as tx:
        if body.team_id is not None:
            await _existing(tx, "team", body.team_id, "team_id")
        row = await tx.insert("user", {"id": domain.new_id("usr"), **body.model_dump()})
        version = await _commit(tx, who, "create", "user", None, row)
    return await _published(deps, "user", User.model_validate(row), version)


async def list_users(
    deps: Deps,
    who: Principal,
    team_id: str | None,
    email: str | None,
    role: str | None,
    limit: int | None,
    cursor: str | None,
) -> Page[Any]:
    filters = {"email": email, "role": role}
    return await _page(deps, who, "user", filters, limit, cursor, team_id)


async def get_user(deps: Deps, who: Principal, user_id: str) -> User:
    item: User = await _get(deps, who, "user", user_id)
    return item


async def update_user(
    deps: Deps, who: Principal, user_id: str, body: UserPatch, if_match: set[int] | None
) -> Changed[User]:
    values = domain.changes(body)
    if any(values.get(name, "") is None for name in ("email", "role")):
        raise InvalidField("email and role cannot be null")
    async with deps.store.transaction() as tx:
        before = await _visible(tx, who, "user", user_id)
        domain.check_version(before["version"], if_match)
        _may_manage_user(who, before)
        role = str(values.get("role", before["role"]))
        domain.require_role_grant(who, role)
        domain.validate_user(role, before["team_id"])
        after = await tx.update("user", user_id, values)
        version = await _commit(tx, who, "update", "user", before, after)
    return await _published(deps, "user", User.model_validate(after), version)


async def delete_user(
    deps: Deps, who: Principal, user_id: str, if_match: set[int] | None
) -> Changed[User]:
    async with deps.store.transaction() as tx:
        before = await _visible(tx, who, "user", user_id)
        domain.check_version(before["version"], if_match)
        _may_manage_user(who, before)
        await tx.delete("user", user_id)
        version = await _commit(tx, who, "delete", "user", before, None)
    return await _published(deps, "user", User.model_validate(before), version)


def _may_manage_user(who: Principal, user: Row) -> None:
    domain.require_team(who, user["team_id"], "manage users of")
    if user["role"] == "admin":
        domain.require_platform_admin(who, "manage admin users")


# --- API keys ------------------------------------------------------------------------
async def create_key(deps: Deps, who: Principal, body: KeyCreate) -> Changed[KeyCreated]:
    domain.require_team(who, body.team_id, "create keys for")
    domain.validate_expiry(body.expires_at, deps.clock())
    plaintext = generate_api_key()
    async with deps.store.transaction() as tx:
        await _existing(tx, "team", body.team_id, "team_id")
        if body.user_id is not None:
            await _key_owner(tx, who, body.user_id, body.team_id)
        row = await tx.insert(
            "key",
            {
                "id": domain.new_id("key"),
                "key_hash": hash_api_key(plaintext, deps.key_hash_salt),
                "key_prefix": key_hint(plaintext),
                **body.model_dump(),
            },
        )
        version = await _commit(tx, who, "create", "key", None, row)
    item = KeyCreated(**domain.public_key(row), key=plaintext)
    return await _published(deps, "key", item, version)


async def _key_owner(tx: Transaction, who: Principal, user_id: str, team_id: str) -> None:
    user = await _existing(tx, "user", user_id, "user_id")
    if user["team_id"] != team_id:
        raise InvalidField(f"user {user_id!r} is not in team {team_id!r}", field="user_id")
    if user["role"] == "admin":
        domain.require_platform_admin(who, "create keys for admin users")


async def list_keys(
    deps: Deps,
    who: Principal,
    team_id: str | None,
    user_id: str | None,
    name: str | None,
    active: bool | None,
    limit: int | None,
    cursor: str | None,
) -> Page[Any]:
    filters = {"user_id": user_id, "name": name, "active": active}
    return await _page(deps, who, "key", filters, limit, cursor, team_id)


async def get_key(deps: Deps, who: Principal, key_id: str) -> ApiKey:
    item: ApiKey = await _get(deps, who, "key", key_id)
    return item


async def lookup_key(deps: Deps, who: Principal, body: KeyLookup) -> ApiKey:
    """Which key a plaintext is (to check a key an operator was handed)."""
    found = await deps.store.key_by_hash(hash_api_key(body.key, deps.key_hash_salt))
    if found is None or not domain.can_see(who, found[0]["team_id"]):
        raise NotFound("no such key")
    return ApiKey.model_validate(domain.public_key(found[0]))


async def update_key(
    deps: Deps, who: Principal, key_id: str, body: KeyPatch, if_match: set[int] | None
) -> Changed[ApiKey]:
    values = domain.changes(body)
    if any(values.get(name, "") is None for name in ("name", "scopes", "active")):
        raise InvalidField("name, scopes and active cannot be null")
    if "expires_at" in values:
        domain.validate_expiry(values["expires_at"], deps.clock())
    async with deps.store.transaction() as tx:
        before = await _visible(tx, who, "key", key_id)
        domain.check_version(before["version"], if_match)
        domain.require_team(who, before["team_id"], "change keys of")
        if before["revoked_at"] is not None:
            raise Conflict(f"key {key_id!r} is revoked; create a new one")
        after = await tx.update("key", key_id, values)
        version = await _commit(tx, who, "update", "key", before, after)
    return await _published(deps, "key", _model("key", after), version)


async def rotate_key(
    deps: Deps, who: Principal, key_id: str, if_match: set[int] | None
) -> Changed[KeyCreated]:
    """A new plaintext for the same key id; the old plaintext stops working."""
    plaintext = generate_api_key()
    async with deps.store.transaction() as tx:
        before = await _visible(tx, who, "key", key_id)
        domain.check_version(before["version"], if_match)
        domain.require_team(who, before["team_id"], "rotate keys of")
        if before["revoked_at"] is not None:
            raise Conflict(f"key {key_id!r} is revoked; create a new one")
        values = {
            "key_hash": hash_api_key(plaintext, deps.key_hash_salt),
            "key_prefix": key_hint(plaintext),
            "rotated_at": deps.clock(),
        }
        after = await tx.update("key", key_id, values)
        version = await _commit(tx, who, "rotate", "key", before, after)
    item = KeyCreated(**domain.public_key(after), key=plaintext)
    return await _published(deps, "key", item, version)


async def revoke_key(
    deps: Deps, who: Principal, key_id: str, if_match: set[int] | None
) -> Changed[ApiKey]:
    """Permanently disable a key (revoking a revoked key changes nothing)."""
    async with deps.store.transaction() as tx:
        before = await _visible(tx, who, "key", key_id)
        domain.check_version(before["version"], if_match)
        domain.require_team(who, before["team_id"], "revoke keys of")
        if before["revoked_at"] is not None:
            return Changed(_model("key", before), None, published=True)
        after = await tx.update("key", key_id, {"active": False, "revoked_at": deps.clock()})
        version = await _commit(tx, who, "revoke", "key", before, after)
    return await _published(deps, "key", _model("key", after), version)


# --- model aliases -------------------------------------------------------------------
async def create_alias(deps: Deps, who: Principal, body: AliasCreate) -> Changed[Alias]:
    domain.require_team(who, body.team_id, "create aliases in")
    row = body.model_dump()
    async with deps.store.transaction() as tx:
        if body.team_id is not None:
            await _existing(tx, "team", body.team_id, "team_id")
        await _check_targets(tx, row["targets"])
        row = await tx.insert("alias", {"id": domain.new_id("als"), **row})
        version = await _commit(tx, who, "create", "alias", None, row)
    return await _published(deps, "alias", Alias.model_validate(row), version)


async def _check_targets(tx: Transaction, targets: list[dict[str, str]]) -> None:
    backends = await tx.backends(sorted({t["backend_id"] for t in targets}))
    domain.validate_targets(targets, backends)


async def list_aliases(
    deps: Deps,
    who: Principal,
    team_id: str | None,
    name: str | None,
    scope: str | None,
    limit: int | None,
    cursor: str | None,
) -> Page[Any]:
    filters: dict[str, Any] = {"name": name}
    if scope == "global":
        filters["global"] = True
    elif scope == "team":
        filters["team_only"] = True
    return await _page(deps, who, "alias", filters, limit, cursor, team_id)


async def get_alias(deps: Deps, who: Principal, alias_id: str) -> Alias:
    item: Alias = await _get(deps, who, "alias", alias_id)
    return item


async def update_alias(
    deps: Deps, who: Principal, alias_id: str, body: AliasPatch, if_match: set[int] | None
) -> Changed[Alias]:
    values = domain.changes(body)
    if any(values.get(name, "") is None for name in ("name", "targets")):
        raise InvalidField("name and targets cannot be null")
    async with deps.store.transaction() as tx:
        before = await _visible(tx, who, "alias", alias_id)
        domain.check_version(before["version"], if_match)
        domain.require_team(who, before["team_id"], "change aliases of")
        if "targets" in values:
            values["targets"] = [t.model_dump() for t in body.targets or []]
            await _check_targets(tx, values["targets"])
        after = await tx.update("alias", alias_id, values)
        version = await _commit(tx, who, "update", "alias", before, after)
    return await _published(deps, "alias", Alias.model_validate(after), version)


async def delete_alias(
    deps: Deps, who: Principal, alias_id: str, if_match: set[int] | None
) -> Changed[Alias]:
    async with deps.store.transaction() as tx:
        before = await _visible(tx, who, "alias", alias_id)
        domain.check_version(before["version"], if_match)
        domain.require_team(who, before["team_id"], "delete aliases of")
        await tx.delete("alias", alias_id)
        version = await _commit(tx, who, "delete", "alias", before, None)
    return await _published(deps, "alias", Alias.model_validate(before), version)


# --- quotas --------------------------------------------------------------------------
QUOTA_DEFAULTS = {"grace_micros": 0, "budget_period": "monthly"}


async def create_quota(deps: Deps, who: Principal, body: QuotaCreate) -> Changed[Quota]:
    values = {k: v for k, v in body.model_dump().items() if v is not None}
    async with deps.store.transaction() as tx:
        team_id = await _quota_team(tx, who, body.scope, body.subject_id)
        domain.require_quota_write(who, body.scope, team_id)
        domain.validate_quota(values)
        row = {"id": domain.new_id("quo"), "team_id": team_id, **values}
        row = await tx.insert("quota", row)
        version = await _commit(tx, who, "create", "quota", None, row)
    return await _published(deps, "quota", Quota.model_validate(row), version)


async def _quota_team(tx: Transaction, who: Principal, scope: str, subject_id: str) -> str:
    """The team a quota belongs to: the team itself, or the key's team."""
    kind = "team" if scope == "team" else "key"
    subject = await tx.get(kind, subject_id)
    if subject is None or not domain.can_see(who, _team_of(kind, subject)):
        raise InvalidField(f"subject_id: no {kind} {subject_id!r}", field="subject_id")
    return str(_team_of(kind, subject))


async def list_quotas(
    deps: Deps,
    who: Principal,
    team_id: str | None,
    scope: str | None,
    subject_id: str | None,
    limit: int | None,
    cursor: str | None,
) -> Page[Any]:
    filters = {"scope": scope, "subject_id": subject_id}
    return await _page(deps, who, "quota", filters, limit, cursor, team_id)


async def get_quota(deps: Deps, who: Principal, quota_id: str) -> Quota:
    item: Quota = await _get(deps, who, "quota", quota_id)
    return item


async def update_quota(
    deps: Deps, who: Principal, quota_id: str, body: QuotaPatch, if_match: set[int] | None
) -> Changed[Quota]:
    values = domain.changes(body)
    for name, default in QUOTA_DEFAULTS.items():
        if name in values and values[name] is None:
            values[name] = default
    async with deps.store.transaction() as tx:
        before = await _visible(tx, who, "quota", quota_id)
        domain.check_version(before["version"], if_match)
        domain.require_quota_write(who, before["scope"], before["team_id"])
        domain.validate_quota({**before, **values})
        after = await tx.update("quota", quota_id, values)
        version = await _commit(tx, who, "update", "quota", before, after)
    return await _published(deps, "quota", Quota.model_validate(after), version)


async def delete_quota(
    deps: Deps, who: Principal, quota_id: str, if_match: set[int] | None
) -> Changed[Quota]:
    async with deps.store.transaction() as tx:
        before = await _visible(tx, who, "quota", quota_id)
        domain.check_version(before["version"], if_match)
        domain.require_quota_write(who, before["scope"], before["team_id"])
        await tx.delete("quota", quota_id)
        version = await _commit(tx, who, "delete", "quota", before, None)
    return await _published(deps, "quota", Quota.model_validate(before), version)


# --- backends ------------------------------------------------------------------------
async def create_backend(deps: Deps, who: Principal, body: BackendCreate) -> Changed[Backend]:
    domain.require_platform_admin(who, "create backends")
    domain.validate_backend(body.kind, body.base_url)
    backend_id = body.id or domain.new_id("be")
    values = body.model_dump(exclude={"id", "credentials"})
    if body.credentials is not None:
        values["credentials_ciphertext"] = deps.cipher.encrypt(backend_id, body.credentials)
    async with deps.store.transaction() as tx:
        row = await tx.insert("backend", {"id": backend_id, **values})
        version = await _commit(tx, who, "create", "backend", None, row)
    return await _published(deps, "backend", _model("backend", row), version)


async def list_backends(
    deps: Deps,
    who: Principal,
    name: str | None,
    kind: str | None,
    tag: str | None,
    limit: int | None,
    cursor: str | None,
) -> Page[Any]:
    filters = {"name": name, "kind": kind, "tag": tag}
    return await _page(deps, who, "backend", filters, limit, cursor)


async def get_backend(deps: Deps, who: Principal, backend_id: str) -> Backend:
    item: Backend = await _get(deps, who, "backend", backend_id)
    return item


async def update_backend(
    deps: Deps, who: Principal, backend_id: str, body: BackendPatch, if_match: set[int] | None
) -> Changed[Backend]:
    domain.require_platform_admin(who, "change backends")
    values = domain.changes(body)
    nullable = ("credentials",)
    if any(values.get(n, "") is None for n in values if n not in nullable):
        raise InvalidField("only credentials may be null (to remove them)")
    if "credentials" in values:
        creds = values.pop("credentials")
        sealed = None if creds is None else deps.cipher.encrypt(backend_id, creds)
        values["credentials_ciphertext"] = sealed
    async with deps.store.transaction() as tx:
        before = await _visible(tx, who, "backend", backend_id)
        domain.check_version(before["version"], if_match)
        merged = {**before, **values}
        domain.validate_backend(merged["kind"], merged["base_url"])
        after = await tx.update("backend", backend_id, values)
        version = await _commit(tx, who, "update", "backend", before, after)
    return await _published(deps, "backend", _model("backend", after), version)


async def delete_backend(
    deps: Deps, who: Principal, backend_id: str, if_match: set[int] | None
) -> Changed[Backend]:
    domain.require_platform_admin(who, "delete backends")
    async with deps.store.transaction() as tx:
        before = await _visible(tx, who, "backend", backend_id)
        domain.check_version(before["version"], if_match)
        users = await tx.aliases_using(backend_id)
        if users:
            raise Conflict(f"backend {backend_id!r} is a target of aliases {', '.join(users)}")
        await tx.delete("backend", backend_id)
        version = await _commit(tx, who, "delete", "backend", before, None)
    return await _published(deps, "backend", _model("backend", before), version)


# --- model prices --------------------------------------------------------------------
async def set_price(
    deps: Deps, who: Principal, model: str, body: PriceSet, if_match: set[int] | None
) -> Changed[Price]:
    domain.require_platform_admin(who, "set prices")
    if not 0 < len(model) <= 200:
        raise InvalidField("model must have 1 to 200 characters", field="model")
    async with deps.store.transaction() as tx:
        before = await tx.get("price", model, lock=True)
        if before is None:
            if if_match is not None:
                domain.check_version(0, if_match)
            after = await tx.insert("price", {"model": model, **body.model_dump()})
        else:
            domain.check_version(before["version"], if_match)
            after = await tx.update("price", model, body.model_dump())
        version = await _commit(tx, who, "set", "price", before, after, prices=True)
    return await _published(deps, "price", Price.model_validate(after), version)


async def list_prices(
    deps: Deps, who: Principal, model: str | None, limit: int | None, cursor: str | None
) -> Page[Any]:
    return await _page(deps, who, "price", {"model": model}, limit, cursor)


async def get_price(deps: Deps, who: Principal, model: str) -> Price:
    item: Price = await _get(deps, who, "price", model)
    return item


async def delete_price(
    deps: Deps, who: Principal, model: str, if_match: set[int] | None
) -> Changed[Price]:
    domain.require_platform_admin(who, "delete prices")
    async with deps.store.transaction() as tx:
        before = await _visible(tx, who, "price", model)
        domain.check_version(before["version"], if_match)
        await tx.delete("price", model)
        version = await _commit(tx, who, "delete", "price", before, None, prices=True)
    return await _published(deps, "price", Price.model_validate(before), version)


# --- routing rules -------------------------------------------------------------------
async def create_rule(deps: Deps, who: Principal, body: RuleCreate) -> Changed[RoutingRule]:
    domain.require_platform_admin(who, "create routing rules")
    async with deps.store.transaction() as tx:
        row = await tx.insert("rule", {"id": domain.new_id("rr"), **body.model_dump()})
        version = await _commit(tx, who, "create", "rule", None, row)
    return await _published(deps, "rule", RoutingRule.model_validate(row), version)


async def list_rules(
    deps: Deps,
    who: Principal,
    name: str | None,
    alias: str | None,
    limit: int | None,
    cursor: str | None,
) -> Page[Any]:
    return await _page(deps, who, "rule", {"name": name, "alias": alias}, limit, cursor)


async def get_rule(deps: Deps, who: Principal, rule_id: str) -> RoutingRule:
    item: RoutingRule = await _get(deps, who, "rule", rule_id)
    return item


async def update_rule(
    deps: Deps, who: Principal, rule_id: str, body: RulePatch, if_match: set[int] | None
) -> Changed[RoutingRule]:
    domain.require_platform_admin(who, "change routing rules")
    values = domain.changes(body)
    if any(values.get(n, "") is None for n in ("name", "strategy", "weights")):
        raise InvalidField("name, strategy and weights cannot be null")
    async with deps.store.transaction() as tx:
        before = await _visible(tx, who, "rule", rule_id)
        domain.check_version(before["version"], if_match)
        after = await tx.update("rule", rule_id, values)
        version = await _commit(tx, who, "update", "rule", before, after)
    return await _published(deps, "rule", RoutingRule.model_validate(after), version)


async def delete_rule(
    deps: Deps, who: Principal, rule_id: str, if_match: set[int] | None
) -> Changed[RoutingRule]:
    domain.require_platform_admin(who, "delete routing rules")
    async with deps.store.transaction() as tx:
        before = await _visible(tx, who, "rule", rule_id)
        domain.check_version(before["version"], if_match)
        await tx.delete("rule", rule_id)
        version = await _commit(tx, who, "delete", "rule", before, None)
    return await _published(deps, "rule", RoutingRule.model_validate(before), version)


# --- audit log and config ------------------------------------------------------------
async def list_audit(
    deps: Deps,
    who: Principal,
    team_id: str | None,
    target_type: str | None,
    target_id: str | None,
    since_version: int | None,
    limit: int | None,
    cursor: str | None,
) -> Page[Any]:
    filters = {"target_type": target_type, "target_id": target_id, "since_version": since_version}
    return await _page(deps, who, "audit", filters, limit, cursor, team_id)


async def config_snapshot(deps: Deps) -> ConfigSnapshot:
    """The snapshot at the current version, built from PostgreSQL."""
    state = await deps.store.read_state()
    return domain.build_snapshot(state, deps.key_hash_salt, deps.clock())
