"""Per-snapshot lookups for the hot path: keys, aliases, routes, prices, quota limits.

``GovernanceIndex.build(snapshot, table, cipher)`` runs once per config snapshot or
routing table version (from the agents' ``on_change``); a request then costs dict
lookups only: the key by its keyed hash, the route plan by (team, alias), the price by
model. Nothing here does I/O.

Key scopes the data plane understands (others, like ``admin``, are ignored here):

- API scopes ``chat`` (also ``/v1/messages``), ``embeddings``, ``inference`` (both): a key
  holding any of them may use only those APIs; a key holding none may use all;
- alias scopes ``model:<alias>``: a key holding any may use only those aliases (and
  ``/v1/models`` lists only those).

Upstream credentials (``BackendConfig.credentials_ciphertext``) are opened once per
snapshot: ``api_key`` is the provider key, every other entry is sent as an HTTP header
of that name (e.g. ``OpenAI-Organization``).

Routing: an alias's targets keep their config order (the first is primary). When the
router's table has weights for the alias they pick the primary (weighted at random
among healthy candidates), the others follow as fallbacks (healthy before ejected);
without a table entry a routing rule with strategy ``weighted`` uses the backends'
static weights, and otherwise the config order is the order of attempts.
"""

from __future__ import annotations

import bisect
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass

from hyperinfer.client.credentials import CredentialsCipher, CredentialsError
from hyperinfer.client.errors import AuthenticationFailed, ModelNotFound, PermissionDenied
from hyperinfer.client.keys import hash_api_key
from hyperinfer.client.providers.base import Upstream
from hyperinfer.client.quota import Limits, QuotaIndex
from hyperinfer.contracts.config.v1 import (
    AliasConfig,
    BackendConfig,
    ConfigSnapshot,
    KeyConfig,
    ModelPrice,
)
from hyperinfer.contracts.routing.v1 import RouteCandidate, RoutingTablePublished

log = logging.getLogger(__name__)

API_SCOPES = {"chat": frozenset({"chat", "messages"}), "embeddings": frozenset({"embeddings"})}
API_SCOPES["inference"] = API_SCOPES["chat"] | API_SCOPES["embeddings"]
MODEL_SCOPE_PREFIX = "model:"
KNOWN_KEYS = 10_000  # authenticated keys remembered per snapshot (only valid ones)


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated API key, as the hot path needs it."""

    key_id: str
    team_id: str
    user_id: str | None
    apis: frozenset[str] | None
    """The APIs it may use (None: all)."""
    aliases: frozenset[str] | None
    """The aliases it may use (None: all)."""
    expires_at: float | None

    def may_use_api(self, api: str) -> bool:
        return self.apis is None or api in self.apis

    def may_use_alias(self, alias: str) -> bool:
        return self.aliases is None or alias in self.aliases


@dataclass(frozen=True, slots=True)
class Candidate:
    """One backend an alias may be served by, ready to call."""

    upstream: Upstream
    weight: float
    healthy: bool
    credentials_error: str | None = None

    @property
    def backend(self) -> BackendConfig:
        return self.upstream.backend

    @property
    def backend_id(self) -> str:
        return self.upstream.backend.id


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """An alias's candidates and how to order them for one request."""

    alias: str
    candidates: tuple[Candidate, ...]
    cumulative: tuple[float, ...] = ()
    """Cumulative weights of ``candidates`` (empty: use the config order)."""
    source: str = "config"

    def attempts(self, rand: float | None = None) -> list[Candidate]:
        """The order of attempts: the (weighted) primary, then the rest, ejected last."""
        ordered = list(self.candidates)
        if self.cumulative and self.cumulative[-1] > 0:
            point = (random.random() if rand is None else rand) * self.cumulative[-1]
            index = min(bisect.bisect_right(self.cumulative, point), len(ordered) - 1)
            ordered.insert(0, ordered.pop(index))
        if all(c.healthy for c in ordered):
            return ordered
        return [c for c in ordered if c.healthy] + [c for c in ordered if not c.healthy]


class GovernanceIndex:
    """Everything a request looks up, for one (config, routing table) pair."""

    def __init__(
        self,
        snapshot: ConfigSnapshot,
        table: RoutingTablePublished | None,
        cipher: CredentialsCipher | None,
    ) -> None:
        self.version = snapshot.version
        self.table_version = table.version if table is not None else 0
        self.salt = snapshot.key_hash_salt
        self.prices: dict[str, ModelPrice] = dict(snapshot.prices)
        self.price_version = snapshot.price_version
        self.quota = QuotaIndex.from_snapshot(snapshot)
        self._callers = {h: _caller(k) for h, k in snapshot.keys.items() if k.active}
        self._known: dict[str, Caller] = {}
        """Keys that authenticated under this snapshot, by key: an HMAC per request saved."""
        self._upstreams = _upstreams(snapshot, cipher)
        self._plans = _plans(snapshot, table, self._upstreams)

    @classmethod
    def build(
        cls,
        snapshot: ConfigSnapshot,
        table: RoutingTablePublished | None = None,
        cipher: CredentialsCipher | None = None,
    ) -> GovernanceIndex:
        return cls(snapshot, table, cipher)

    # --- per request ------------------------------------------------------------------
    def authenticate(self, api_key: str | None) -> Caller:
        if not api_key:
            raise AuthenticationFailed(
                "Missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key'."
            )
        caller = self._known.get(api_key)
        if caller is None:
            caller = self._callers.get(hash_api_key(api_key, self.salt))
            if caller is None:
                raise AuthenticationFailed("Invalid API key.")
            if len(self._known) >= KNOWN_KEYS:
                self._known.clear()
            self._known[api_key] = caller
        if caller.expires_at is not None and time.time() >= caller.expires_at:
            raise AuthenticationFailed("API key expired.", code="api_key_expired")
        return caller

    def authorize_api(self, caller: Caller, api: str) -> None:
        if not caller.may_use_api(api):
            raise PermissionDenied(
                f"This API key may not use the {api} API.", code="insufficient_scope"
            )

    def plan(self, caller: Caller, alias: object) -> RoutePlan:
        """The route plan of ``alias`` for the caller's team (``ModelNotFound`` if none)."""
        if not isinstance(alias, str) or not alias:
            raise ModelNotFound("You must provide a model (an alias this key may use).")
        plan = self._plans.get((caller.team_id, alias)) or self._plans.get((None, alias))
        if plan is None:
            raise ModelNotFound(f"The model '{alias}' does not exist or you do not have access.")
        if not caller.may_use_alias(alias):
            raise PermissionDenied(
                f"This API key may not use the model '{alias}'.", code="model_not_allowed"
            )
        return plan

    def aliases_for(self, caller: Caller) -> list[str]:
        names = {a for t, a in self._plans if t is None or t == caller.team_id}
        return sorted(a for a in names if caller.may_use_alias(a))

    def limits(self, caller: Caller) -> Limits:
        return self.quota.limits(caller.team_id, caller.key_id)

    def price(self, model: str, alias: str) -> ModelPrice | None:
        return self.prices.get(model) or self.prices.get(alias)

    def status(self) -> dict[str, object]:
        return {
            "config_version": self.version,
            "routing_table_version": self.table_version,
            "keys": len(self._callers),
            "aliases": len(self._plans),
            "backends": len(self._upstreams),
            "price_version": self.price_version,
        }


def cost_micros(price: ModelPrice | None, prompt_tokens: int, completion_tokens: int) -> int:
    """Integer micro-units, rounded up (prices are per million tokens)."""
    if price is None:
        return 0
    total = prompt_tokens * price.input_per_mtok_micros
    total += completion_tokens * price.output_per_mtok_micros
    return -(-total // 1_000_000)


def _caller(key: KeyConfig) -> Caller:
    apis: set[str] = set()
    aliases: set[str] = set()
    for scope in key.scopes:
        if scope in API_SCOPES:
            apis |= API_SCOPES[scope]
        elif scope.startswith(MODEL_SCOPE_PREFIX):
            aliases.add(scope[len(MODEL_SCOPE_PREFIX) :])
    return Caller(
        key_id=key.id,
        team_id=key.team_id,
        user_id=key.user_id,
        apis=frozenset(apis) if apis else None,
        aliases=frozenset(aliases) if aliases else None,
        expires_at=key.expires_at.timestamp() if key.expires_at is not None else None,
    )


@dataclass(frozen=True, slots=True)
class _Opened:
    api_key: str | None
    headers: dict[str, str]
    error: str | None


def _upstreams(snapshot: ConfigSnapshot, cipher: CredentialsCipher | None) -> dict[str, _Opened]:
    """Decrypt every backend's credentials once per snapshot (never logged)."""
    opened: dict[str, _Opened] = {}
    for backend in snapshot.backends.values():
        opened[backend.id] = _open(backend, cipher)
    return opened


def _open(backend: BackendConfig, cipher: CredentialsCipher | None) -> _Opened:
    if not backend.credentials_ciphertext:
        return _Opened(None, {}, None)
    if cipher is None:
        error = "HYPERINFER_CREDENTIALS_KEY is not set on this node"
    else:
        try:
            creds = cipher.decrypt(backend.id, backend.credentials_ciphertext)
        except CredentialsError as exc:
            error = str(exc)
        else:
            headers = {k: v for k, v in creds.items() if k != "api_key"}  # e.g. OpenAI-Organization
            return _Opened(creds.get("api_key"), headers, None)
    log.error("backend %s: cannot open its upstream credentials: %s", backend.id, error)
    return _Opened(None, {}, error)


def _candidate(
    backend: BackendConfig, model: str, weight: float, healthy: bool, opened: _Opened
) -> Candidate:
    upstream = Upstream(
        backend=backend,
        model=model,
        api_key=opened.api_key,
        timeout_s=backend.timeout_s,
        extra_headers=opened.headers,
    )
    return Candidate(upstream, weight, healthy, opened.error)


def _plans(
    snapshot: ConfigSnapshot,
    table: RoutingTablePublished | None,
    opened: dict[str, _Opened],
) -> dict[tuple[str | None, str], RoutePlan]:
    weighted = {r.alias for r in snapshot.routing_rules if r.alias and r.strategy == "weighted"}
    plans: dict[tuple[str | None, str], RoutePlan] = {}
    for alias in snapshot.aliases:
        routed = _table_entry(table, alias)
        plan = (
            _routed_plan(alias.name, routed, snapshot, opened)
            if routed
            else _static_plan(alias, snapshot, opened, alias.name in weighted)
        )
        if plan.candidates:
            plans[(alias.team_id, alias.name)] = plan
    return plans


def _table_entry(
    table: RoutingTablePublished | None, alias: AliasConfig
) -> list[RouteCandidate] | None:
    if table is None or table.version == 0:
        return None
    if alias.team_id is not None:
        return table.team_aliases.get(alias.team_id, {}).get(alias.name)
    return table.aliases.get(alias.name)


def _static_plan(
    alias: AliasConfig, snapshot: ConfigSnapshot, opened: dict[str, _Opened], weighted: bool
) -> RoutePlan:
    candidates = tuple(
        _candidate(backend, t.model, backend.weight, True, opened[backend.id])
        for t in alias.targets
        if (backend := snapshot.backends.get(t.backend_id)) is not None
    )
    cumulative = _cumulative(c.weight for c in candidates) if weighted else ()
    return RoutePlan(alias.name, candidates, cumulative, "static")


def _routed_plan(
    name: str,
    routed: list[RouteCandidate],
    snapshot: ConfigSnapshot,
    opened: dict[str, _Opened],
) -> RoutePlan:
    candidates = tuple(
        _candidate(backend, r.model, r.weight if r.healthy else 0.0, r.healthy, opened[backend.id])
        for r in routed
        if (backend := snapshot.backends.get(r.backend_id)) is not None
    )
    return RoutePlan(name, candidates, _cumulative(c.weight for c in candidates), "router")


def _cumulative(weights: Iterable[float]) -> tuple[float, ...]:
    out: list[float] = []
    running = 0.0
    for weight in weights:
        running += max(0.0, weight)
        out.append(running)
    return tuple(out)
