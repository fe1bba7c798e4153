"""Pure policy of the config service: who may do what, what a valid object is, and the
snapshot the data plane runs on. No I/O here.

Authorization model
-------------------
- The master admin key (``HYPERINFER_ADMIN_KEY``) acts on everything.
- An API key with scope ``admin`` acts for its user: a user with role ``admin`` is a
  platform admin (everything); a user with role ``team_admin`` administers only the
  key's team. Any other key is refused (403); an unknown key is 401.
- A team admin sees its own team's objects and the global ones (global aliases,
  backends, prices, routing rules), and changes only its own team's users, keys,
  aliases and per-key quotas. The team itself (name, budget) and its team-wide quota
  are set by platform admins. Another team's object answers 404, as if absent; naming
  another team in a new object answers 403.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from hyperinfer.client.keys import KEY_HASH_SCHEME
from hyperinfer.config.errors import BadRequest, Forbidden, InvalidField, PreconditionFailed
from hyperinfer.contracts.config.v1 import (
    AliasConfig,
    BackendConfig,
    ConfigSnapshot,
    KeyConfig,
    ModelPrice,
    QuotaConfig,
    RoutingRule,
    TeamConfig,
)

ADMIN_SCOPE = "admin"
AdminScope = Literal["platform", "team"]
MASTER_ACTOR = "admin"
KINDS_NEEDING_URL = frozenset({"openai_compatible", "triton"})
Row = dict[str, Any]


# --- who is calling ------------------------------------------------------------------
@dataclass(frozen=True)
class Principal:
    """The caller of an admin request. ``team_id`` None: acts on every team."""

    actor: str
    team_id: str | None = None

    @property
    def is_platform_admin(self) -> bool:
        return self.team_id is None


MASTER = Principal(MASTER_ACTOR)


def principal_for_key(key: Row, user: Row | None, now: datetime) -> Principal | None:
    """The admin principal an API key stands for, or None when it may not administer."""
    if not key_usable(key, now) or ADMIN_SCOPE not in key["scopes"] or user is None:
        return None
    if user["role"] == "admin":
        return Principal(f"key:{key['id']}")
    if user["role"] == "team_admin" and user["team_id"] == key["team_id"]:
        return Principal(f"key:{key['id']}", key["team_id"])
    return None


def key_usable(key: Row, now: datetime) -> bool:
    expires = key.get("expires_at")
    return bool(key["active"]) and (expires is None or expires > now)


# --- what they may do ----------------------------------------------------------------
def can_see(who: Principal, team_id: str | None) -> bool:
    """Reads: platform admins see all; team admins their team's and global objects."""
    return who.is_platform_admin or team_id is None or team_id == who.team_id


def require_platform_admin(who: Principal, what: str) -> None:
    if not who.is_platform_admin:
        raise Forbidden(f"only platform admins may {what}")


def require_team(who: Principal, team_id: str | None, what: str) -> None:
    """Writes to a team's object: the caller must administer that team."""
    if who.is_platform_admin:
        return
    if team_id is None:
        raise Forbidden(f"only platform admins may {what} global objects")
    if team_id != who.team_id:
        raise Forbidden(f"you administer team {who.team_id}, not {team_id}")


def require_quota_write(who: Principal, scope: str, team_id: str) -> None:
    """Team admins set per-key quotas of their team; team-wide quotas are the platform's."""
    if scope == "team":
        require_platform_admin(who, "set team-wide quotas")
    require_team(who, team_id, "set quotas of")


def require_role_grant(who: Principal, role: str) -> None:
    if role == "admin":
        require_platform_admin(who, "grant the admin role")


def team_filter(who: Principal, requested: str | None) -> str | None:
    """The team a listing is limited to: the caller's own for team admins."""
    if who.is_platform_admin:
        return requested
    if requested is not None and requested != who.team_id:
        raise Forbidden(f"you administer team {who.team_id}, not {requested}")
    return who.team_id


# --- optimistic concurrency ----------------------------------------------------------
def etag(version: int) -> str:
    return f'"{version}"'


def parse_if_match(header: str | None) -> set[int] | None:
    """Versions an ``If-Match`` accepts; None when absent or ``*`` (any version)."""
    if header is None or header.strip() == "*":
        return None
    versions = set()
    for part in header.split(","):
        tag = part.strip().removeprefix("W/").strip('"')
        try:
            versions.add(int(tag))
        except ValueError:
            raise BadRequest(f'If-Match must list ETags like "3", got {part.strip()!r}') from None
    return versions


def check_version(current: int, accepted: set[int] | None) -> None:
    if accepted is not None and current not in accepted:
        raise PreconditionFailed(
            f"the object is at version {current}; reload it and retry", current_version=current
        )


def etag_matches(header: str | None, version: int) -> bool:
    """``If-None-Match`` against the current version (``*`` matches anything)."""
    if header is None:
        return False
    tags = {p.strip().removeprefix("W/").strip('"') for p in header.split(",")}
    return "*" in tags or str(version) in tags


# --- identifiers and pages -----------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def encode_cursor(last: str) -> str:
    return base64.urlsafe_b64encode(last.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        return raw.decode()
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("malformed cursor; pass next_cursor from the previous page") from None


# --- what a valid object is ----------------------------------------------------------
def changes(patch: Any) -> Row:
    """Fields a ``*Patch`` sets (explicit nulls included, absent fields not)."""
    return {name: getattr(patch, name) for name in patch.model_fields_set}


def validate_user(role: str, team_id: str | None) -> None:
    if role != "admin" and team_id is None:
        raise InvalidField(f"a user with role {role} needs a team_id", field="team_id")


def validate_quota(row: Mapping[str, Any]) -> None:
    soft, hard = row.get("soft_limit_micros"), row.get("budget_micros")
    if soft is not None and hard is not None and soft > hard:
        raise InvalidField(
            "soft_limit_micros must not exceed budget_micros", field="soft_limit_micros"
        )


def validate_backend(kind: str, base_url: str) -> None:
    if kind in KINDS_NEEDING_URL and not base_url:
        raise InvalidField(f"a {kind} backend needs a base_url", field="base_url")
    if base_url:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidField("base_url must be an http(s) URL", field="base_url")
        if parts.password:
            raise InvalidField("put credentials in credentials, not in base_url", field="base_url")


def validate_targets(targets: Iterable[Mapping[str, str]], backends: Mapping[str, Row]) -> None:
    """Every target names an existing backend and, if it lists models, one of them."""
    for i, target in enumerate(targets):
        backend = backends.get(target["backend_id"])
        if backend is None:
            raise InvalidField(
                f"targets[{i}]: no backend {target['backend_id']!r}", field="targets"
            )
        if backend["models"] and target["model"] not in backend["models"]:
            raise InvalidField(
                f"targets[{i}]: backend {backend['id']!r} does not serve {target['model']!r}",
                field="targets",
            )


def validate_expiry(expires_at: datetime | None, now: datetime) -> None:
    if expires_at is not None and expires_at <= now:
        raise InvalidField("expires_at must be in the future", field="expires_at")


# --- what the audit log and responses may show ---------------------------------------
def public_key(row: Mapping[str, Any]) -> Row:
    """A key row without its hash: the hint stands in for it."""
    out = {k: v for k, v in row.items() if k not in ("key_hash", "key_prefix")}
    out["key_hint"] = row["key_prefix"]
    return out


def public_backend(row: Mapping[str, Any]) -> Row:
    """A backend row without its ciphertext."""
    out = {k: v for k, v in row.items() if k != "credentials_ciphertext"}
    out["has_credentials"] = row.get("credentials_ciphertext") is not None
    return out


PUBLIC_VIEW = {"key": public_key, "backend": public_backend}


def public(kind: str, row: Mapping[str, Any] | None) -> Row | None:
    if row is None:
        return None
    view = PUBLIC_VIEW.get(kind)
    return view(row) if view else dict(row)


# --- the snapshot --------------------------------------------------------------------
@dataclass
class GovernanceState:
    """Every table the snapshot is built from, read in one consistent transaction."""

    version: int
    price_version: int = 0
    teams: list[Row] = field(default_factory=list)
    keys: list[Row] = field(default_factory=list)
    aliases: list[Row] = field(default_factory=list)
    quotas: list[Row] = field(default_factory=list)
    backends: list[Row] = field(default_factory=list)
    prices: list[Row] = field(default_factory=list)
    rules: list[Row] = field(default_factory=list)
    users: list[Row] = field(default_factory=list)
    """``id``, ``role`` and ``team_id`` of every user: what decides a key's ``admin_scope``."""


def build_snapshot(state: GovernanceState, salt: str, now: datetime) -> ConfigSnapshot:
    """The data plane's view at ``state.version``: no plaintext secret anywhere."""
    return ConfigSnapshot(
        version=state.version,
        generated_at=now,
        key_hash_scheme=KEY_HASH_SCHEME,
        key_hash_salt=salt,
        teams={t["id"]: _team(t) for t in state.teams},
        keys=_keys(state.keys, state.users, now),
        aliases=[_alias(a) for a in sorted(state.aliases, key=_alias_order)],
        quotas=_quotas(state.quotas, state.teams),
        backends={b["id"]: _backend(b) for b in state.backends},
        prices={p["model"]: _price(p) for p in state.prices},
        price_version=str(state.price_version),
        routing_rules=[_rule(r) for r in sorted(state.rules, key=lambda r: r["name"])],
    )


def _team(row: Row) -> TeamConfig:
    return TeamConfig(
        id=row["id"],
        name=row["name"],
        failure_policy=row["failure_policy"],
        budget_micros=row["budget_micros"],
    )


def _keys(keys: list[Row], users: list[Row], now: datetime) -> dict[str, KeyConfig]:
    """Usable keys by hash, each with what it may administer (as the admin API decides)."""
    by_id = {u["id"]: u for u in users}
    return {
        k["key_hash"]: _key(k, admin_scope(k, by_id.get(k["user_id"]), now))
        for k in keys
        if key_usable(k, now)
    }


def admin_scope(key: Row, user: Row | None, now: datetime) -> AdminScope | None:
    """``platform``, ``team`` or None: the rights ``principal_for_key`` grants this key."""
    who = principal_for_key(key, user, now)
    if who is None:
        return None
    return "platform" if who.is_platform_admin else "team"


def _key(row: Row, scope: AdminScope | None) -> KeyConfig:
    return KeyConfig(
        id=row["id"],
        team_id=row["team_id"],
        user_id=row["user_id"],
        name=row["name"],
        scopes=list(row["scopes"]),
        expires_at=row["expires_at"],
        active=row["active"],
        admin_scope=scope,
    )


def _alias_order(row: Row) -> tuple[str, str]:
    return row["name"], row["team_id"] or ""


def _alias(row: Row) -> AliasConfig:
    return AliasConfig.model_validate(
        {"name": row["name"], "team_id": row["team_id"], "targets": row["targets"]}
    )


QUOTA_FIELDS = (
    "rpm",
    "tpm",
    "budget_micros",
    "soft_limit_micros",
    "grace_micros",
    "budget_period",
)


def _quotas(quotas: list[Row], teams: list[Row]) -> list[QuotaConfig]:
    """Quota rows, with each team's budget as its team quota's hard limit when unset."""
    budgets = {t["id"]: t["budget_micros"] for t in teams if t["budget_micros"] is not None}
    out = []
    for row in sorted(quotas, key=lambda q: (q["scope"], q["subject_id"])):
        values = {f: row[f] for f in QUOTA_FIELDS}
        if row["scope"] == "team" and values["budget_micros"] is None:
            values["budget_micros"] = budgets.get(row["subject_id"])
        out.append(
            QuotaConfig(
                scope=row["scope"], subject_id=row["subject_id"], team_id=row["team_id"], **values
            )
        )
    covered = {q.subject_id for q in out if q.scope == "team"}
    for team_id, budget in sorted(budgets.items()):
        if team_id not in covered:
            out.append(
                QuotaConfig(scope="team", subject_id=team_id, team_id=team_id, budget_micros=budget)
            )
    return out


def _backend(row: Row) -> BackendConfig:
    return BackendConfig(
        id=row["id"],
        name=row["name"],
        kind=row["kind"],
        base_url=row["base_url"],
        models=list(row["models"]),
        weight=row["weight"],
        tags=list(row["tags"]),
        timeout_s=row["timeout_s"],
        credentials_ciphertext=row["credentials_ciphertext"],
    )


def _price(row: Row) -> ModelPrice:
    return ModelPrice(
        input_per_mtok_micros=row["input_per_mtok_micros"],
        output_per_mtok_micros=row["output_per_mtok_micros"],
    )


def _rule(row: Row) -> RoutingRule:
    return RoutingRule(
        name=row["name"], alias=row["alias"], strategy=row["strategy"], weights=row["weights"]
    )
