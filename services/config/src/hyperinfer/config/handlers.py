"""The admin API's use cases as plain async functions.

Each takes its dependencies (``Deps``), the caller (``Principal``) and a validated
request, and returns a resource. A change runs in one transaction that checks the
caller's rights and the object's version, writes the object, takes the next config
version and writes the audit entry; then, after commit, the snapshot at that version
is published before the caller gets its answer (bounded by ``publish_timeout_s``;
a late publish is finished by the repair loop).

That shape is written once: ``get_item`` and ``list_items`` for every kind, and
``_create``, ``_update`` and ``_delete`` for the changes, each told what kind it works
on by a ``Resource``. What differs per kind stays in that kind's function, in plain
sight: who may do it, what must exist, what a value must satisfy (passed to the shared
steps as a check that runs inside the transaction), and the changes that follow their
own shape (a key's plaintext answered once on create and rotate, revoke, set a price).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, Mapping
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
ModelT = TypeVar("ModelT", bound=BaseModel, covariant=True)
Publish = Callable[[int, list[str]], Awaitable[None]]
Prepare = Callable[[Transaction], Awaitable[None]]
"""A create's own checks, run in its transaction before the insert."""
Check = Callable[[Transaction, Row], Awaitable[None]]
"""A change's own checks of the stored object, run after the visibility and version checks."""


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


@dataclass(frozen=True)
class Resource(Generic[ModelT]):
    """One kind of governance object, as the shared steps see it."""

    kind: str
    """The store's kind, the audit log's ``target_type`` and the snapshot's changed kind."""
    model: type[ModelT]
    """What a stored row is answered as (``domain.public`` drops its secrets first)."""
    id_prefix: str = ""
    """Generated ids are ``<prefix>_<20 hex>``."""
    key: str = "id"
    """The column that names an object (a price is named by its ``model``)."""
    prices: bool = False
    """A change moves the snapshot's ``price_version``."""
    numbered: bool = False
    """Objects are numbered (the audit log): a cursor must name a number."""
    where: Callable[[dict[str, Any]], dict[str, Any]] = dict
    """Listing filters as the API names them → as the store names them."""

    def item(self, row: Row) -> ModelT:
        return self.model.model_validate(domain.public(self.kind, row))

    def new_id(self) -> str:
        return domain.new_id(self.id_prefix)


def _alias_scope(filters: dict[str, Any]) -> dict[str, Any]:
    """``scope=global``: aliases of no team; ``scope=team``: aliases of a team."""
    scope = filters.pop("scope", None)
    if scope == "global":
        filters["global"] = True
    elif scope == "team":
        filters["team_only"] = True
    return filters


TEAMS = Resource("team", Team, "team")
USERS = Resource("user", User, "usr")
KEYS = Resource("key", ApiKey, "key")
ALIASES = Resource("alias", Alias, "als", where=_alias_scope)
QUOTAS = Resource("quota", Quota, "quo")
BACKENDS = Resource("backend", Backend, "be")
PRICES = Resource("price", Price, key="model", prices=True)
RULES = Resource("rule", RoutingRule, "rr")
AUDIT = Resource("audit", AuditEntry, numbered=True)


# --- shared steps --------------------------------------------------------------------
def _team_of(kind: str, row: Row) -> str | None:
    return str(row["id"]) if kind == "team" else row.get("team_id")


async def _locked(
    tx: Transaction, who: Principal, res: Resource[Any], key: str, if_match: set[int] | None
) -> Row:
    """The object, locked for the change: 404 when absent or not the caller's to see, 412
    when ``If-Match`` names another version."""
    row = await tx.get(res.kind, key, lock=True)
    if row is None or not domain.can_see(who, _team_of(res.kind, row)):
        raise NotFound(f"no {res.kind} {key!r}")
    domain.check_version(row["version"], if_match)
    return row


async def _existing(tx: Transaction, kind: str, key: str, field_name: str) -> Row:
    row = await tx.get(kind, key)
    if row is None:
        raise InvalidField(f"{field_name}: no {kind} {key!r}", field=field_name)
    return row


def _refuse_nulls(values: Row, *names: str) -> None:
    """A ``*Patch`` may not clear these fields."""
    if any(values.get(name, "") is None for name in names):
        listed = f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else names[0]
        raise InvalidField(f"{listed} cannot be null")


async def _commit(
    tx: Transaction,
    who: Principal,
    action: str,
    res: Resource[Any],
    before: Row | None,
    after: Row | None,
) -> int:
    row = after if after is not None else before
    assert row is not None
    record = AuditRecord(
        actor=who.actor,
        actor_team_id=who.team_id,
        action=f"{res.kind}.{action}",
        target_type=res.kind,
        target_id=str(row[res.key]),
        team_id=_team_of(res.kind, row),
        before=domain.public(res.kind, before),
        after=domain.public(res.kind, after),
    )
    return await tx.commit_change(record, prices=res.prices)


async def _published(deps: Deps, res: Resource[Any], item: ItemT, version: int) -> Changed[ItemT]:
    """Publish the snapshot at ``version`` (bounded wait), then answer."""
    target = getattr(item, res.key, None)
    log.info(
        "config changed", extra={"kind": res.kind, "target": target, "config_version": version}
    )
    try:
        await asyncio.wait_for(deps.publish(version, [res.kind]), deps.publish_timeout_s)
    except Exception as exc:
        log.warning(
            "config committed but not yet published; the repair loop will publish it",
            extra={"config_version": version, "error": f"{type(exc).__name__}: {exc}"[:300]},
        )
        deps.on_publish_failed()
        return Changed(item, version, published=False)
    return Changed(item, version, published=True)


async def _create(
    deps: Deps,
    who: Principal,
    res: Resource[ItemT],
    values: Row,
    prepare: Prepare | None = None,
    item_id: str | None = None,
) -> Changed[ItemT]:
    """Insert ``values`` as a new object (``item_id``, or a new id), audited and published."""
    async with deps.store.transaction() as tx:
        if prepare is not None:
            await prepare(tx)
        row = await tx.insert(res.kind, {"id": item_id or res.new_id(), **values})
        version = await _commit(tx, who, "create", res, None, row)
    return await _published(deps, res, res.item(row), version)


async def _update(
    deps: Deps,
    who: Principal,
    res: Resource[ItemT],
    key: str,
    values: Row,
    if_match: set[int] | None,
    check: Check | None = None,
) -> Changed[ItemT]:
    """Write ``values`` into the object, audited and published."""
    async with deps.store.transaction() as tx:
        before = await _locked(tx, who, res, key, if_match)
        if check is not None:
            await check(tx, before)
        after = await tx.update(res.kind, key, values)
        version = await _commit(tx, who, "update", res, before, after)
    return await _published(deps, res, res.item(after), version)


async def _delete(
    deps: Deps,
    who: Principal,
    res: Resource[ItemT],
    key: str,
    if_match: set[int] | None,
    check: Check | None = None,
) -> Changed[ItemT]:
    """Delete the object, audited and published; the answer is what was deleted."""
    async with deps.store.transaction() as tx:
        before = await _locked(tx, who, res, key, if_match)
        if check is not None:
            await check(tx, before)
        await tx.delete(res.kind, key)
        version = await _commit(tx, who, "delete", res, before, None)
    return await _published(deps, res, res.item(before), version)


async def list_items(
    deps: Deps,
    who: Principal,
    res: Resource[Any],
    filters: Mapping[str, Any],
    limit: int | None,
    cursor: str | None,
) -> Page[Any]:
    """A page of the objects the caller may see, filtered by equality; ``team_id`` asks
    for exactly one team's objects (refused for another team's admin)."""
    size = min(limit or deps.page_size, deps.max_page_size)
    wanted = {k: v for k, v in res.where(dict(filters)).items() if v is not None}
    if "team_id" in wanted:
        wanted["team_id"] = domain.team_filter(who, wanted["team_id"])
    query = PageQuery(
        filters=wanted,
        team_id=None if who.is_platform_admin else who.team_id,  # what the caller may see
        limit=size + 1,
        after=domain.decode_cursor(cursor),
    )
    if res.numbered and query.after is not None and not query.after.isdigit():
        raise BadRequest("malformed cursor; pass next_cursor from the previous page")
    rows, total = await deps.store.page(res.kind, query)
    items = [res.item(r) for r in rows[:size]]
    more = len(rows) > size
    next_cursor = domain.encode_cursor(str(rows[size - 1][res.key])) if more else None
    return Page[Any](items=items, total=total, limit=size, next_cursor=next_cursor)


async def get_item(deps: Deps, who: Principal, res: Resource[ItemT], key: str) -> ItemT:
    """The object; 404 when absent or not the caller's to see."""
    row = await deps.store.get(res.kind, key)
    if row is None or not domain.can_see(who, _team_of(res.kind, row)):
        raise NotFound(f"no {res.kind} {key!r}")
    return res.item(row)


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
    return await _create(deps, who, TEAMS, body.model_dump(exclude={"id"}), item_id=body.id)


async def update_team(
    deps: Deps, who: Principal, team_id: str, body: TeamPatch, if_match: set[int] | None
) -> Changed[Team]:
    domain.require_platform_admin(who, "change teams")
    values = domain.changes(body)
    _refuse_nulls(values, "name", "failure_policy")
    return await _update(deps, who, TEAMS, team_id, values, if_match)


async def delete_team(
    deps: Deps, who: Principal, team_id: str, if_match: set[int] | None
) -> Changed[Team]:
    domain.require_platform_admin(who, "delete teams")

    async def no_active_keys(tx: Transaction, team: Row) -> None:
        if await tx.find("key", team_id=team_id, active=True):
            raise Conflict(f"team {team_id!r} still has active keys; revoke them first")

    return await _delete(deps, who, TEAMS, team_id, if_match, no_active_keys)


# --- users ---------------------------------------------------------------------------
async def create_user(deps: Deps, who: Principal, body: UserCreate) -> Changed[User]:
    domain.validate_user(body.role, body.team_id)
    domain.require_role_grant(who, body.role)
    domain.require_team(who, body.team_id, "create users in")

    async def team_exists(tx: Transaction) -> None:
        if body.team_id is not None:
            await _existing(tx, "team", body.team_id, "team_id")

    return await _create(deps, who, USERS, body.model_dump(), team_exists)


async def update_user(
    deps: Deps, who: Principal, user_id: str, body: UserPatch, if_match: set[int] | None
) -> Changed[User]:
    values = domain.changes(body)
    _refuse_nulls(values, "email", "role")

    async def may_grant(tx: Transaction, user: Row) -> None:
        _may_manage_user(who, user)
        role = str(values.get("role", user["role"]))
        domain.require_role_grant(who, role)
        domain.validate_user(role, user["team_id"])

    return await _update(deps, who, USERS, user_id, values, if_match, may_grant)


async def delete_user(
    deps: Deps, who: Principal, user_id: str, if_match: set[int] | None
) -> Changed[User]:
    async def may_manage(tx: Transaction, user: Row) -> None:
        _may_manage_user(who, user)

    return await _delete(deps, who, USERS, user_id, if_match, may_manage)


def _may_manage_user(who: Principal, user: Row) -> None:
    domain.require_team(who, user["team_id"], "manage users of")
    if user["role"] == "admin":
        domain.require_platform_admin(who, "manage admin users")


# --- API keys ------------------------------------------------------------------------
async def create_key(deps: Deps, who: Principal, body: KeyCreate) -> Changed[KeyCreated]:
    """A new key; its plaintext is in this answer and nowhere else, ever."""
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
                "id": KEYS.new_id(),
                "key_hash": hash_api_key(plaintext, deps.key_hash_salt),
                "key_prefix": key_hint(plaintext),
                **body.model_dump(),
            },
        )
        version = await _commit(tx, who, "create", KEYS, None, row)
    item = KeyCreated(**domain.public_key(row), key=plaintext)
    return await _published(deps, KEYS, item, version)


async def _key_owner(tx: Transaction, who: Principal, user_id: str, team_id: str) -> None:
    user = await _existing(tx, "user", user_id, "user_id")
    if user["team_id"] != team_id:
        raise InvalidField(f"user {user_id!r} is not in team {team_id!r}", field="user_id")
    if user["role"] == "admin":
        domain.require_platform_admin(who, "create keys for admin users")


def _changeable_key(who: Principal, key: Row, what: str) -> None:
    domain.require_team(who, key["team_id"], what)
    if key["revoked_at"] is not None:
        raise Conflict(f"key {key['id']!r} is revoked; create a new one")


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
    _refuse_nulls(values, "name", "scopes", "active")
    if "expires_at" in values:
        domain.validate_expiry(values["expires_at"], deps.clock())

    async def changeable(tx: Transaction, key: Row) -> None:
        _changeable_key(who, key, "change keys of")

    return await _update(deps, who, KEYS, key_id, values, if_match, changeable)


async def rotate_key(
    deps: Deps, who: Principal, key_id: str, if_match: set[int] | None
) -> Changed[KeyCreated]:
    """A new plaintext for the same key id; the old plaintext stops working."""
    plaintext = generate_api_key()
    async with deps.store.transaction() as tx:
        before = await _locked(tx, who, KEYS, key_id, if_match)
        _changeable_key(who, before, "rotate keys of")
        values = {
            "key_hash": hash_api_key(plaintext, deps.key_hash_salt),
            "key_prefix": key_hint(plaintext),
            "rotated_at": deps.clock(),
        }
        after = await tx.update("key", key_id, values)
        version = await _commit(tx, who, "rotate", KEYS, before, after)
    item = KeyCreated(**domain.public_key(after), key=plaintext)
    return await _published(deps, KEYS, item, version)


async def revoke_key(
    deps: Deps, who: Principal, key_id: str, if_match: set[int] | None
) -> Changed[ApiKey]:
    """Permanently disable a key (revoking a revoked key changes nothing)."""
    async with deps.store.transaction() as tx:
        before = await _locked(tx, who, KEYS, key_id, if_match)
        domain.require_team(who, before["team_id"], "revoke keys of")
        if before["revoked_at"] is not None:
            return Changed(KEYS.item(before), None, published=True)
        after = await tx.update("key", key_id, {"active": False, "revoked_at": deps.clock()})
        version = await _commit(tx, who, "revoke", KEYS, before, after)
    return await _published(deps, KEYS, KEYS.item(after), version)


# --- model aliases -------------------------------------------------------------------
async def create_alias(deps: Deps, who: Principal, body: AliasCreate) -> Changed[Alias]:
    domain.require_team(who, body.team_id, "create aliases in")
    values = body.model_dump()

    async def team_and_targets_exist(tx: Transaction) -> None:
        if body.team_id is not None:
            await _existing(tx, "team", body.team_id, "team_id")
        await _check_targets(tx, values["targets"])

    return await _create(deps, who, ALIASES, values, team_and_targets_exist)


async def _check_targets(tx: Transaction, targets: list[dict[str, str]]) -> None:
    backends = await tx.backends(sorted({t["backend_id"] for t in targets}))
    domain.validate_targets(targets, backends)


async def update_alias(
    deps: Deps, who: Principal, alias_id: str, body: AliasPatch, if_match: set[int] | None
) -> Changed[Alias]:
    values = domain.changes(body)
    _refuse_nulls(values, "name", "targets")
    if "targets" in values:
        values["targets"] = [t.model_dump() for t in body.targets or []]

    async def own_alias_and_targets_exist(tx: Transaction, alias: Row) -> None:
        domain.require_team(who, alias["team_id"], "change aliases of")
        if "targets" in values:
            await _check_targets(tx, values["targets"])

    return await _update(
        deps, who, ALIASES, alias_id, values, if_match, own_alias_and_targets_exist
    )


async def delete_alias(
    deps: Deps, who: Principal, alias_id: str, if_match: set[int] | None
) -> Changed[Alias]:
    async def own_alias(tx: Transaction, alias: Row) -> None:
        domain.require_team(who, alias["team_id"], "delete aliases of")

    return await _delete(deps, who, ALIASES, alias_id, if_match, own_alias)


# --- quotas --------------------------------------------------------------------------
QUOTA_DEFAULTS = {"grace_micros": 0, "budget_period": "monthly"}


async def create_quota(deps: Deps, who: Principal, body: QuotaCreate) -> Changed[Quota]:
    values = {k: v for k, v in body.model_dump().items() if v is not None}

    async def subject_in_callers_team(tx: Transaction) -> None:
        team_id = await _quota_team(tx, who, body.scope, body.subject_id)
        domain.require_quota_write(who, body.scope, team_id)
        domain.validate_quota(values)
        values["team_id"] = team_id  # the quota belongs to its subject's team

    return await _create(deps, who, QUOTAS, values, subject_in_callers_team)


async def _quota_team(tx: Transaction, who: Principal, scope: str, subject_id: str) -> str:
    """The team a quota belongs to: the team itself, or the key's team."""
    kind = "team" if scope == "team" else "key"
    subject = await tx.get(kind, subject_id)
    if subject is None or not domain.can_see(who, _team_of(kind, subject)):
        raise InvalidField(f"subject_id: no {kind} {subject_id!r}", field="subject_id")
    return str(_team_of(kind, subject))


async def update_quota(
    deps: Deps, who: Principal, quota_id: str, body: QuotaPatch, if_match: set[int] | None
) -> Changed[Quota]:
    values = domain.changes(body)
    for name, default in QUOTA_DEFAULTS.items():
        if name in values and values[name] is None:
            values[name] = default

    async def writable_and_valid(tx: Transaction, quota: Row) -> None:
        domain.require_quota_write(who, quota["scope"], quota["team_id"])
        domain.validate_quota({**quota, **values})

    return await _update(deps, who, QUOTAS, quota_id, values, if_match, writable_and_valid)


async def delete_quota(
    deps: Deps, who: Principal, quota_id: str, if_match: set[int] | None
) -> Changed[Quota]:
    async def writable(tx: Transaction, quota: Row) -> None:
        domain.require_quota_write(who, quota["scope"], quota["team_id"])

    return await _delete(deps, who, QUOTAS, quota_id, if_match, writable)


# --- backends ------------------------------------------------------------------------
async def create_backend(deps: Deps, who: Principal, body: BackendCreate) -> Changed[Backend]:
    """Credentials are write-only: sealed here, never answered (``has_credentials``)."""
    domain.require_platform_admin(who, "create backends")
    domain.validate_backend(body.kind, body.base_url)
    backend_id = body.id or BACKENDS.new_id()
    values = body.model_dump(exclude={"id", "credentials"})
    if body.credentials is not None:
        values["credentials_ciphertext"] = deps.cipher.encrypt(backend_id, body.credentials)
    return await _create(deps, who, BACKENDS, values, item_id=backend_id)


async def update_backend(
    deps: Deps, who: Principal, backend_id: str, body: BackendPatch, if_match: set[int] | None
) -> Changed[Backend]:
    """``credentials`` replaces the sealed credentials; null removes them."""
    domain.require_platform_admin(who, "change backends")
    values = domain.changes(body)
    nullable = ("credentials",)
    if any(values.get(n, "") is None for n in values if n not in nullable):
        raise InvalidField("only credentials may be null (to remove them)")
    if "credentials" in values:
        creds = values.pop("credentials")
        sealed = None if creds is None else deps.cipher.encrypt(backend_id, creds)
        values["credentials_ciphertext"] = sealed

    async def still_valid(tx: Transaction, backend: Row) -> None:
        merged = {**backend, **values}
        domain.validate_backend(merged["kind"], merged["base_url"])

    return await _update(deps, who, BACKENDS, backend_id, values, if_match, still_valid)


async def delete_backend(
    deps: Deps, who: Principal, backend_id: str, if_match: set[int] | None
) -> Changed[Backend]:
    domain.require_platform_admin(who, "delete backends")

    async def no_alias_targets_it(tx: Transaction, backend: Row) -> None:
        users = await tx.aliases_using(backend_id)
        if users:
            raise Conflict(f"backend {backend_id!r} is a target of aliases {', '.join(users)}")

    return await _delete(deps, who, BACKENDS, backend_id, if_match, no_alias_targets_it)


# --- model prices --------------------------------------------------------------------
async def set_price(
    deps: Deps, who: Principal, model: str, body: PriceSet, if_match: set[int] | None
) -> Changed[Price]:
    """Create or replace a model's price (``If-Match: "0"``: only if it has none yet)."""
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
        version = await _commit(tx, who, "set", PRICES, before, after)
    return await _published(deps, PRICES, PRICES.item(after), version)


async def delete_price(
    deps: Deps, who: Principal, model: str, if_match: set[int] | None
) -> Changed[Price]:
    domain.require_platform_admin(who, "delete prices")
    return await _delete(deps, who, PRICES, model, if_match)


# --- routing rules -------------------------------------------------------------------
async def create_rule(deps: Deps, who: Principal, body: RuleCreate) -> Changed[RoutingRule]:
    domain.require_platform_admin(who, "create routing rules")
    return await _create(deps, who, RULES, body.model_dump())


async def update_rule(
    deps: Deps, who: Principal, rule_id: str, body: RulePatch, if_match: set[int] | None
) -> Changed[RoutingRule]:
    domain.require_platform_admin(who, "change routing rules")
    values = domain.changes(body)
    _refuse_nulls(values, "name", "strategy", "weights")
    return await _update(deps, who, RULES, rule_id, values, if_match)


async def delete_rule(
    deps: Deps, who: Principal, rule_id: str, if_match: set[int] | None
) -> Changed[RoutingRule]:
    domain.require_platform_admin(who, "delete routing rules")
    return await _delete(deps, who, RULES, rule_id, if_match)


# --- config --------------------------------------------------------------------------
async def config_snapshot(deps: Deps) -> ConfigSnapshot:
    """The snapshot at the current version, built from PostgreSQL."""
    state = await deps.store.read_state()
    return domain.build_snapshot(state, deps.key_hash_salt, deps.clock())
