"""HTTP routes of the admin API (FastAPI glue only; the work is in ``handlers``).

Every error leaves as RFC 9457 ``application/problem+json``, translated once by the
runtime's problem handlers (``hyperinfer.runtime.problems``): ``ConfigError``
subclasses by their status, request validation as 422 (malformed JSON as 400),
unknown routes as 404, anything unexpected as 500 without details; bodies over the
limit are refused here as 413 before any handler runs. Objects carry ``ETag: "<version>"``; changes
accept ``If-Match`` and answer ``X-Config-Version`` (the config version the change
committed at) and ``X-Config-Published`` (whether Redis holds it yet).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from hyperinfer.config import domain, handlers
from hyperinfer.config.domain import Principal
from hyperinfer.config.errors import BadRequest, ConfigError, PayloadTooLarge
from hyperinfer.config.handlers import Changed, Deps
from hyperinfer.config.resources import (
    Alias,
    AliasCreate,
    AliasPatch,
    ApiKey,
    AuditEntry,
    Backend,
    BackendCreate,
    BackendPatch,
    ConfigVersion,
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
from hyperinfer.contracts.config.v1 import ConfigSnapshot
from hyperinfer.runtime.problems import (
    install_problem_handlers,
    problem_response,
    problem_responses,
)
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ADMIN = "/v1/admin"
ERRORS = problem_responses(400, 401, 403, 404, 409, 412, 413, 422, 503)


# --- body limit ----------------------------------------------------------------------
class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with a 413 problem, before any handler runs."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await self._read(scope, receive)
        if body is None:
            response = problem_response(
                413,
                PayloadTooLarge.title,
                f"request bodies are limited to {self.max_bytes} bytes",
                PayloadTooLarge.code,
                instance=scope["path"],
            )
            await response(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, scope: Scope, receive: Receive) -> bytes | None:
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


# --- dependencies --------------------------------------------------------------------
_bearer = HTTPBearer(auto_error=False, description="the master admin key or an admin API key")


def _deps(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


async def _caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    header = f"Bearer {credentials.credentials}" if credentials else None
    return await handlers.authenticate(_deps(request), header)


async def _optional_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    if credentials is None:
        return None
    return await handlers.authenticate(_deps(request), f"Bearer {credentials.credentials}")


def _if_match(if_match: Annotated[str | None, Header(max_length=1024)] = None) -> set[int] | None:
    return domain.parse_if_match(if_match)


DepsT = Annotated[Deps, Depends(_deps)]
Caller = Annotated[Principal, Depends(_caller)]
IfMatch = Annotated[set[int] | None, Depends(_if_match)]
Limit = Annotated[int | None, Query(ge=1, le=500, description="page size")]
Cursor = Annotated[str | None, Query(max_length=512, description="next_cursor of a page")]
Filter = Annotated[str | None, Query(max_length=200)]
Id = Annotated[str, Path(min_length=1, max_length=200)]


def _object(item: BaseModel, status: int = 200, location: str | None = None) -> Response:
    response = Response(item.model_dump_json(), status_code=status, media_type="application/json")
    version = getattr(item, "version", None)
    if isinstance(version, int):
        response.headers["etag"] = domain.etag(version)
    if location:
        response.headers["location"] = location
    return response


def _changed(change: Changed[Any], status: int = 200, location: str | None = None) -> Response:
    response = _object(change.item, status, location)
    if change.config_version is not None:
        response.headers["x-config-version"] = str(change.config_version)
    response.headers["x-config-published"] = "true" if change.published else "false"
    return response


def _created(change: Changed[Any], collection: str) -> Response:
    item_id = getattr(change.item, "id", None)
    return _changed(change, 201, f"{ADMIN}/{collection}/{item_id}")


def _query_checked(request: Request) -> None:
    """Query parameters must be known and single: a typo'd filter is an error, not "all"."""
    names = [name for name, _ in request.query_params.multi_items()]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise BadRequest(f"query parameter given more than once: {', '.join(repeated)}")
    unknown = sorted(set(names) - _known_query(request.scope.get("route")))
    if unknown:
        raise BadRequest(f"unknown query parameter: {', '.join(repr(n) for n in unknown)}")


def _known_query(route: Any) -> set[str]:
    dependant = getattr(route, "dependant", None)
    return set() if dependant is None else _query_names(dependant)


def _query_names(dependant: Any) -> set[str]:
    names = {str(param.alias) for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


router = APIRouter(responses=ERRORS, dependencies=[Depends(_query_checked)])


# --- caller --------------------------------------------------------------------------
@router.get(f"{ADMIN}/whoami", tags=["admin"])
async def whoami(who: Caller) -> WhoAmI:
    return handlers.whoami(who)


# --- teams ---------------------------------------------------------------------------
@router.post(f"{ADMIN}/teams", tags=["teams"], status_code=201, response_model=Team)
async def create_team(deps: DepsT, who: Caller, body: TeamCreate) -> Response:
    return _created(await handlers.create_team(deps, who, body), "teams")


@router.get(f"{ADMIN}/teams", tags=["teams"])
async def list_teams(
    deps: DepsT, who: Caller, name: Filter = None, limit: Limit = None, cursor: Cursor = None
) -> Page[Team]:
    return await handlers.list_items(deps, who, handlers.TEAMS, {"name": name}, limit, cursor)


@router.get(f"{ADMIN}/teams/{{team_id}}", tags=["teams"], response_model=Team)
async def get_team(deps: DepsT, who: Caller, team_id: Id) -> Response:
    return _object(await handlers.get_item(deps, who, handlers.TEAMS, team_id))


@router.patch(f"{ADMIN}/teams/{{team_id}}", tags=["teams"], response_model=Team)
async def update_team(
    deps: DepsT, who: Caller, team_id: Id, body: TeamPatch, if_match: IfMatch
) -> Response:
    return _changed(await handlers.update_team(deps, who, team_id, body, if_match))


@router.delete(f"{ADMIN}/teams/{{team_id}}", tags=["teams"], response_model=Team)
async def delete_team(deps: DepsT, who: Caller, team_id: Id, if_match: IfMatch) -> Response:
    return _changed(await handlers.delete_team(deps, who, team_id, if_match))


# --- users ---------------------------------------------------------------------------
@router.post(f"{ADMIN}/users", tags=["users"], status_code=201, response_model=User)
async def create_user(deps: DepsT, who: Caller, body: UserCreate) -> Response:
    return _created(await handlers.create_user(deps, who, body), "users")


@router.get(f"{ADMIN}/users", tags=["users"])
async def list_users(
    deps: DepsT,
    who: Caller,
    team_id: Filter = None,
    email: Filter = None,
    role: Literal["admin", "team_admin", "member"] | None = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[User]:
    return await handlers.list_items(
        deps, who, handlers.USERS, {"team_id": team_id, "email": email, "role": role}, limit, cursor
    )


@router.get(f"{ADMIN}/users/{{user_id}}", tags=["users"], response_model=User)
async def get_user(deps: DepsT, who: Caller, user_id: Id) -> Response:
    return _object(await handlers.get_item(deps, who, handlers.USERS, user_id))


@router.patch(f"{ADMIN}/users/{{user_id}}", tags=["users"], response_model=User)
async def update_user(
    deps: DepsT, who: Caller, user_id: Id, body: UserPatch, if_match: IfMatch
) -> Response:
    return _changed(await handlers.update_user(deps, who, user_id, body, if_match))


@router.delete(f"{ADMIN}/users/{{user_id}}", tags=["users"], response_model=User)
async def delete_user(deps: DepsT, who: Caller, user_id: Id, if_match: IfMatch) -> Response:
    return _changed(await handlers.delete_user(deps, who, user_id, if_match))


# --- API keys ------------------------------------------------------------------------
@router.post(f"{ADMIN}/keys", tags=["keys"], status_code=201, response_model=KeyCreated)
async def create_key(deps: DepsT, who: Caller, body: KeyCreate) -> Response:
    return _created(await handlers.create_key(deps, who, body), "keys")


@router.get(f"{ADMIN}/keys", tags=["keys"])
async def list_keys(
    deps: DepsT,
    who: Caller,
    team_id: Filter = None,
    user_id: Filter = None,
    name: Filter = None,
    active: bool | None = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[ApiKey]:
    return await handlers.list_items(
        deps,
        who,
        handlers.KEYS,
        {"team_id": team_id, "user_id": user_id, "name": name, "active": active},
        limit,
        cursor,
    )


@router.post(f"{ADMIN}/keys/lookup", tags=["keys"])
async def lookup_key(deps: DepsT, who: Caller, body: KeyLookup) -> ApiKey:
    return await handlers.lookup_key(deps, who, body)


@router.get(f"{ADMIN}/keys/{{key_id}}", tags=["keys"], response_model=ApiKey)
async def get_key(deps: DepsT, who: Caller, key_id: Id) -> Response:
    return _object(await handlers.get_item(deps, who, handlers.KEYS, key_id))


@router.patch(f"{ADMIN}/keys/{{key_id}}", tags=["keys"], response_model=ApiKey)
async def update_key(
    deps: DepsT, who: Caller, key_id: Id, body: KeyPatch, if_match: IfMatch
) -> Response:
    return _changed(await handlers.update_key(deps, who, key_id, body, if_match))


@router.post(f"{ADMIN}/keys/{{key_id}}/rotate", tags=["keys"], response_model=KeyCreated)
async def rotate_key(deps: DepsT, who: Caller, key_id: Id, if_match: IfMatch) -> Response:
    return _changed(await handlers.rotate_key(deps, who, key_id, if_match))


@router.post(f"{ADMIN}/keys/{{key_id}}/revoke", tags=["keys"], response_model=ApiKey)
async def revoke_key(deps: DepsT, who: Caller, key_id: Id, if_match: IfMatch) -> Response:
    return _changed(await handlers.revoke_key(deps, who, key_id, if_match))


# --- model aliases -------------------------------------------------------------------
@router.post(f"{ADMIN}/aliases", tags=["aliases"], status_code=201, response_model=Alias)
async def create_alias(deps: DepsT, who: Caller, body: AliasCreate) -> Response:
    return _created(await handlers.create_alias(deps, who, body), "aliases")


@router.get(f"{ADMIN}/aliases", tags=["aliases"])
async def list_aliases(
    deps: DepsT,
    who: Caller,
    team_id: Filter = None,
    name: Filter = None,
    scope: Literal["global", "team"] | None = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[Alias]:
    return await handlers.list_items(
        deps,
        who,
        handlers.ALIASES,
        {"team_id": team_id, "name": name, "scope": scope},
        limit,
        cursor,
    )


@router.get(f"{ADMIN}/aliases/{{alias_id}}", tags=["aliases"], response_model=Alias)
async def get_alias(deps: DepsT, who: Caller, alias_id: Id) -> Response:
    return _object(await handlers.get_item(deps, who, handlers.ALIASES, alias_id))


@router.patch(f"{ADMIN}/aliases/{{alias_id}}", tags=["aliases"], response_model=Alias)
async def update_alias(
    deps: DepsT, who: Caller, alias_id: Id, body: AliasPatch, if_match: IfMatch
) -> Response:
    return _changed(await handlers.update_alias(deps, who, alias_id, body, if_match))


@router.delete(f"{ADMIN}/aliases/{{alias_id}}", tags=["aliases"], response_model=Alias)
async def delete_alias(deps: DepsT, who: Caller, alias_id: Id, if_match: IfMatch) -> Response:
    return _changed(await handlers.delete_alias(deps, who, alias_id, if_match))


# --- quotas --------------------------------------------------------------------------
@router.post(f"{ADMIN}/quotas", tags=["quotas"], status_code=201, response_model=Quota)
async def create_quota(deps: DepsT, who: Caller, body: QuotaCreate) -> Response:
    return _created(await handlers.create_quota(deps, who, body), "quotas")


@router.get(f"{ADMIN}/quotas", tags=["quotas"])
async def list_quotas(
    deps: DepsT,
    who: Caller,
    team_id: Filter = None,
    scope: Literal["team", "key"] | None = None,
    subject_id: Filter = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[Quota]:
    return await handlers.list_items(
        deps,
        who,
        handlers.QUOTAS,
        {"team_id": team_id, "scope": scope, "subject_id": subject_id},
        limit,
        cursor,
    )


@router.get(f"{ADMIN}/quotas/{{quota_id}}", tags=["quotas"], response_model=Quota)
async def get_quota(deps: DepsT, who: Caller, quota_id: Id) -> Response:
    return _object(await handlers.get_item(deps, who, handlers.QUOTAS, quota_id))


@router.patch(f"{ADMIN}/quotas/{{quota_id}}", tags=["quotas"], response_model=Quota)
async def update_quota(
    deps: DepsT, who: Caller, quota_id: Id, body: QuotaPatch, if_match: IfMatch
) -> Response:
    return _changed(await handlers.update_quota(deps, who, quota_id, body, if_match))


@router.delete(f"{ADMIN}/quotas/{{quota_id}}", tags=["quotas"], response_model=Quota)
async def delete_quota(deps: DepsT, who: Caller, quota_id: Id, if_match: IfMatch) -> Response:
    return _changed(await handlers.delete_quota(deps, who, quota_id, if_match))


# --- backends ------------------------------------------------------------------------
@router.post(f"{ADMIN}/backends", tags=["backends"], status_code=201, response_model=Backend)
async def create_backend(deps: DepsT, who: Caller, body: BackendCreate) -> Response:
    return _created(await handlers.create_backend(deps, who, body), "backends")


@router.get(f"{ADMIN}/backends", tags=["backends"])
async def list_backends(
    deps: DepsT,
    who: Caller,
    name: Filter = None,
    kind: Filter = None,
    tag: Filter = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[Backend]:
    return await handlers.list_items(
        deps, who, handlers.BACKENDS, {"name": name, "kind": kind, "tag": tag}, limit, cursor
    )


@router.get(f"{ADMIN}/backends/{{backend_id}}", tags=["backends"], response_model=Backend)
async def get_backend(deps: DepsT, who: Caller, backend_id: Id) -> Response:
    return _object(await handlers.get_item(deps, who, handlers.BACKENDS, backend_id))


@router.patch(f"{ADMIN}/backends/{{backend_id}}", tags=["backends"], response_model=Backend)
async def update_backend(
    deps: DepsT, who: Caller, backend_id: Id, body: BackendPatch, if_match: IfMatch
) -> Response:
    return _changed(await handlers.update_backend(deps, who, backend_id, body, if_match))


@router.delete(f"{ADMIN}/backends/{{backend_id}}", tags=["backends"], response_model=Backend)
async def delete_backend(deps: DepsT, who: Caller, backend_id: Id, if_match: IfMatch) -> Response:
    return _changed(await handlers.delete_backend(deps, who, backend_id, if_match))


# --- model prices --------------------------------------------------------------------
@router.get(f"{ADMIN}/prices", tags=["prices"])
async def list_prices(
    deps: DepsT, who: Caller, model: Filter = None, limit: Limit = None, cursor: Cursor = None
) -> Page[Price]:
    return await handlers.list_items(deps, who, handlers.PRICES, {"model": model}, limit, cursor)


@router.get(f"{ADMIN}/prices/{{model:path}}", tags=["prices"], response_model=Price)
async def get_price(deps: DepsT, who: Caller, model: Id) -> Response:
    return _object(await handlers.get_item(deps, who, handlers.PRICES, model))


@router.put(f"{ADMIN}/prices/{{model:path}}", tags=["prices"], response_model=Price)
async def set_price(
    deps: DepsT, who: Caller, model: Id, body: PriceSet, if_match: IfMatch
) -> Response:
    return _changed(await handlers.set_price(deps, who, model, body, if_match))


@router.delete(f"{ADMIN}/prices/{{model:path}}", tags=["prices"], response_model=Price)
async def delete_price(deps: DepsT, who: Caller, model: Id, if_match: IfMatch) -> Response:
    return _changed(await handlers.delete_price(deps, who, model, if_match))


# --- routing rules -------------------------------------------------------------------
@router.post(
    f"{ADMIN}/routing-rules", tags=["routing"], status_code=201, response_model=RoutingRule
)
async def create_rule(deps: DepsT, who: Caller, body: RuleCreate) -> Response:
    return _created(await handlers.create_rule(deps, who, body), "routing-rules")


@router.get(f"{ADMIN}/routing-rules", tags=["routing"])
async def list_rules(
    deps: DepsT,
    who: Caller,
    name: Filter = None,
    alias: Filter = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[RoutingRule]:
    return await handlers.list_items(
        deps, who, handlers.RULES, {"name": name, "alias": alias}, limit, cursor
    )


@router.get(f"{ADMIN}/routing-rules/{{rule_id}}", tags=["routing"], response_model=RoutingRule)
async def get_rule(deps: DepsT, who: Caller, rule_id: Id) -> Response:
    return _object(await handlers.get_item(deps, who, handlers.RULES, rule_id))


@router.patch(f"{ADMIN}/routing-rules/{{rule_id}}", tags=["routing"], response_model=RoutingRule)
async def update_rule(
    deps: DepsT, who: Caller, rule_id: Id, body: RulePatch, if_match: IfMatch
) -> Response:
    return _changed(await handlers.update_rule(deps, who, rule_id, body, if_match))


@router.delete(f"{ADMIN}/routing-rules/{{rule_id}}", tags=["routing"], response_model=RoutingRule)
async def delete_rule(deps: DepsT, who: Caller, rule_id: Id, if_match: IfMatch) -> Response:
    return _changed(await handlers.delete_rule(deps, who, rule_id, if_match))


# --- audit log -----------------------------------------------------------------------
@router.get(f"{ADMIN}/audit", tags=["audit"])
async def list_audit(
    deps: DepsT,
    who: Caller,
    team_id: Filter = None,
    target_type: Filter = None,
    target_id: Filter = None,
    since_version: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[AuditEntry]:
    return await handlers.list_items(
        deps,
        who,
        handlers.AUDIT,
        {
            "team_id": team_id,
            "target_type": target_type,
            "target_id": target_id,
            "since_version": since_version,
        },
        limit,
        cursor,
    )


# --- config --------------------------------------------------------------------------
@router.get(
    "/v1/config/sync",
    tags=["config"],
    response_model=ConfigSnapshot,
    responses={304: {"description": "If-None-Match names the current version"}},
)
async def config_sync(
    deps: DepsT,
    who: Annotated[Principal | None, Depends(_optional_caller)],
    x_internal_key: Annotated[str | None, Header(max_length=1024)] = None,
    if_none_match: Annotated[str | None, Header(max_length=1024)] = None,
) -> Response:
    """The full snapshot for a node that pulls (platform admins or X-Internal-Key)."""
    handlers.may_sync(deps, who, x_internal_key)
    current = await deps.store.current_version()
    if domain.etag_matches(if_none_match, current):
        return Response(status_code=304, headers={"etag": domain.etag(current)})
    snapshot = await handlers.config_snapshot(deps)
    response = Response(snapshot.model_dump_json(), media_type="application/json")
    response.headers["etag"] = domain.etag(snapshot.version)
    return response


VersionSource = Callable[[], Awaitable[ConfigVersion]]


@router.get("/v1/config/version", tags=["config"])
async def config_version(request: Request, who: Caller) -> ConfigVersion:
    """The committed, published and Redis-held config versions."""
    source: VersionSource = request.app.state.config_version
    return await source()


def install(app: FastAPI, deps: Deps, version: VersionSource, max_body_bytes: int) -> None:
    """Wire the admin API into ``app``: routes, error translation, body limit."""
    app.state.deps = deps
    app.state.config_version = version
    app.include_router(router)
    install_problem_handlers(app, ConfigError)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)


__all__ = ["install", "router"]
