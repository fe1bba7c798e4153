"""HTTP routes of the admin API (FastAPI glue only; the work is in ``handlers``).

Every resource (teams, users, keys, aliases, quotas, backends, prices, routing rules,
the audit log) has the same routes, described once per resource by a ``Routes`` and
made by ``add_routes``; what only keys have (lookup, rotate, revoke) and the config
routes are written out.

Every error leaves as RFC 9457 ``application/problem+json``, translated once by the
runtime's problem handlers (``hyperinfer.runtime.problems``): ``ConfigError``
subclasses by their status, request validation as 422 (malformed JSON as 400),
unknown routes as 404, anything unexpected as 500 without details; bodies over the
limit are refused here as 413 before any handler runs. Objects carry ``ETag:
"<version>"``; changes accept ``If-Match`` and answer ``X-Config-Version`` (the config
version the change committed at) and ``X-Config-Published`` (whether Redis holds it
yet).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from hyperinfer.config import domain, handlers
from hyperinfer.config.domain import Principal
from hyperinfer.config.errors import BadRequest, ConfigError, PayloadTooLarge
from hyperinfer.config.handlers import Changed, Deps
from hyperinfer.config.resources import (
    AliasCreate,
    AliasPatch,
    ApiKey,
    BackendCreate,
    BackendPatch,
    ConfigVersion,
    KeyCreate,
    KeyCreated,
    KeyLookup,
    KeyPatch,
    Page,
    PriceSet,
    QuotaCreate,
    QuotaPatch,
    RuleCreate,
    RulePatch,
    TeamCreate,
    TeamPatch,
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


# --- the resources: one shape, written once ------------------------------------------
Create = Callable[[Deps, Principal, Any], Awaitable[Changed[Any]]]
Change = Callable[[Deps, Principal, str, Any, set[int] | None], Awaitable[Changed[Any]]]
Delete = Callable[[Deps, Principal, str, set[int] | None], Awaitable[Changed[Any]]]


@dataclass
class Routes:
    """One resource of the admin API: where it lives, what its operations are called, what
    they take and answer, and the handlers behind them.

    ``add_routes`` makes up to five routes of it, in this order::

        POST   /v1/admin/<collection>        create_<one>   201 + Location, the new object
        GET    /v1/admin/<collection>        list_<many>    a Page; ``filters`` + limit, cursor
        GET    /v1/admin/<collection>/<id>   get_<one>      the object + ETag
        PATCH  /v1/admin/<collection>/<id>   update_<one>   (``change_method``/``change_verb``)
        DELETE /v1/admin/<collection>/<id>   delete_<one>   the deleted object

    Changes take ``If-Match`` and answer ``X-Config-Version`` and ``X-Config-Published``.
    """

    collection: str
    one: str
    resource: handlers.Resource[BaseModel]
    filters: Mapping[str, Any] = field(default_factory=dict)
    """The listing's query parameters besides ``limit`` and ``cursor``: name → type."""
    tag: str = ""
    """The OpenAPI tag; the collection when empty."""
    many: str = ""
    """Names the listing (``list_<many>``); the collection when empty."""
    id_param: str = ""
    """The path parameter naming one object; ``<one>_id`` when empty."""
    id_template: str = ""
    """The id's part of the item path; ``{<id_param>}`` when empty."""
    get: bool = True
    create: tuple[type[BaseModel], Create] | None = None
    created: type[BaseModel] | None = None
    """What create answers, when it is not ``resource.model``."""
    change: tuple[type[BaseModel], Change] | None = None
    change_method: str = "PATCH"
    change_verb: str = "update"
    delete: Delete | None = None

    def __post_init__(self) -> None:
        self.tag = self.tag or self.collection
        self.many = self.many or self.collection
        self.id_param = self.id_param or f"{self.one}_id"


def add_routes(router: APIRouter, routes: Routes) -> None:
    """Add the routes ``routes`` describes (see ``Routes``) to ``router``."""
    collection = f"{ADMIN}/{routes.collection}"
    item = f"{collection}/{routes.id_template or '{' + routes.id_param + '}'}"
    if routes.create is not None:
        _add_create(router, routes, collection, *routes.create)
    _add_list(router, routes, collection)
    if routes.get:
        _add_get(router, routes, item)
    if routes.change is not None:
        _add_change(router, routes, item, *routes.change)
    if routes.delete is not None:
        _add_delete(router, routes, item, routes.delete)


Endpoint = Callable[..., Awaitable[Any]]
Call = Callable[[dict[str, Any]], Awaitable[Any]]


def _endpoint(params: list[inspect.Parameter], call: Call) -> Endpoint:
    """An endpoint FastAPI reads as taking ``params`` (their names differ per resource:
    ``team_id``, ``key_id``...); it hands their values to ``call`` by name."""

    async def endpoint(**values: Any) -> Any:
        return await call(values)

    endpoint.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return endpoint


def _param(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    kind = inspect.Parameter.KEYWORD_ONLY
    return inspect.Parameter(name, kind, annotation=annotation, default=default)


_CALLER = [_param("deps", DepsT), _param("who", Caller)]
_IF_MATCH = _param("if_match", IfMatch)


def _add_create(
    router: APIRouter, routes: Routes, path: str, body: type[BaseModel], create: Create
) -> None:
    async def call(v: dict[str, Any]) -> Response:
        return _created(await create(v["deps"], v["who"], v["body"]), routes.collection)

    router.add_api_route(
        path,
        _endpoint([*_CALLER, _param("body", body)], call),
        methods=["POST"],
        name=f"create_{routes.one}",
        tags=[routes.tag],
        status_code=201,
        response_model=routes.created or routes.resource.model,
    )


def _add_list(router: APIRouter, routes: Routes, path: str) -> None:
    async def call(v: dict[str, Any]) -> Page[Any]:
        filters = {name: v[name] for name in routes.filters}
        return await handlers.list_items(
            v["deps"], v["who"], routes.resource, filters, v["limit"], v["cursor"]
        )

    filters = [_param(name, kind, None) for name, kind in routes.filters.items()]
    paging = [_param("limit", Limit, None), _param("cursor", Cursor, None)]
    router.add_api_route(
        path,
        _endpoint([*_CALLER, *filters, *paging], call),
        methods=["GET"],
        name=f"list_{routes.many}",
        tags=[routes.tag],
        response_model=Page[routes.resource.model],  # type: ignore[name-defined]
    )


def _add_get(router: APIRouter, routes: Routes, path: str) -> None:
    async def call(v: dict[str, Any]) -> Response:
        key = v[routes.id_param]
        return _object(await handlers.get_item(v["deps"], v["who"], routes.resource, key))

    router.add_api_route(
        path,
        _endpoint([*_CALLER, _param(routes.id_param, Id)], call),
        methods=["GET"],
        name=f"get_{routes.one}",
        tags=[routes.tag],
        response_model=routes.resource.model,
    )


def _add_change(
    router: APIRouter, routes: Routes, path: str, body: type[BaseModel], change: Change
) -> None:
    async def call(v: dict[str, Any]) -> Response:
        key = v[routes.id_param]
        return _changed(await change(v["deps"], v["who"], key, v["body"], v["if_match"]))

    params = [*_CALLER, _param(routes.id_param, Id), _param("body", body), _IF_MATCH]
    router.add_api_route(
        path,
        _endpoint(params, call),
        methods=[routes.change_method],
        name=f"{routes.change_verb}_{routes.one}",
        tags=[routes.tag],
        response_model=routes.resource.model,
    )


def _add_delete(router: APIRouter, routes: Routes, path: str, delete: Delete) -> None:
    async def call(v: dict[str, Any]) -> Response:
        return _changed(await delete(v["deps"], v["who"], v[routes.id_param], v["if_match"]))

    router.add_api_route(
        path,
        _endpoint([*_CALLER, _param(routes.id_param, Id), _IF_MATCH], call),
        methods=["DELETE"],
        name=f"delete_{routes.one}",
        tags=[routes.tag],
        response_model=routes.resource.model,
    )


RESOURCES = (
    Routes(
        collection="teams",
        one="team",
        resource=handlers.TEAMS,
        filters={"name": Filter},
        create=(TeamCreate, handlers.create_team),
        change=(TeamPatch, handlers.update_team),
        delete=handlers.delete_team,
    ),
    Routes(
        collection="users",
        one="user",
        resource=handlers.USERS,
        filters={
            "team_id": Filter,
            "email": Filter,
            "role": Literal["admin", "team_admin", "member"] | None,
        },
        create=(UserCreate, handlers.create_user),
        change=(UserPatch, handlers.update_user),
        delete=handlers.delete_user,
    ),
    # create answers the plaintext once (KeyCreated); a key is revoked, never deleted
    # (lookup, rotate and revoke are below)
    Routes(
        collection="keys",
        one="key",
        resource=handlers.KEYS,
        filters={"team_id": Filter, "user_id": Filter, "name": Filter, "active": bool | None},
        create=(KeyCreate, handlers.create_key),
        created=KeyCreated,
        change=(KeyPatch, handlers.update_key),
    ),
    Routes(
        collection="aliases",
        one="alias",
        resource=handlers.ALIASES,
        filters={"team_id": Filter, "name": Filter, "scope": Literal["global", "team"] | None},
        create=(AliasCreate, handlers.create_alias),
        change=(AliasPatch, handlers.update_alias),
        delete=handlers.delete_alias,
    ),
    Routes(
        collection="quotas",
        one="quota",
        resource=handlers.QUOTAS,
        filters={"team_id": Filter, "scope": Literal["team", "key"] | None, "subject_id": Filter},
        create=(QuotaCreate, handlers.create_quota),
        change=(QuotaPatch, handlers.update_quota),
        delete=handlers.delete_quota,
    ),
    Routes(
        collection="backends",
        one="backend",
        resource=handlers.BACKENDS,
        filters={"name": Filter, "kind": Filter, "tag": Filter},
        create=(BackendCreate, handlers.create_backend),
        change=(BackendPatch, handlers.update_backend),
        delete=handlers.delete_backend,
    ),
    # a price is named by its model (which may hold "/"), has no create, and is set whole
    Routes(
        collection="prices",
        one="price",
        resource=handlers.PRICES,
        filters={"model": Filter},
        id_param="model",
        id_template="{model:path}",
        change=(PriceSet, handlers.set_price),
        change_method="PUT",
        change_verb="set",
        delete=handlers.delete_price,
    ),
    Routes(
        collection="routing-rules",
        tag="routing",
        one="rule",
        many="rules",
        resource=handlers.RULES,
        filters={"name": Filter, "alias": Filter},
        create=(RuleCreate, handlers.create_rule),
        change=(RulePatch, handlers.update_rule),
        delete=handlers.delete_rule,
    ),
    # the audit log is only listed
    Routes(
        collection="audit",
        one="audit",
        resource=handlers.AUDIT,
        filters={
            "team_id": Filter,
            "target_type": Filter,
            "target_id": Filter,
            "since_version": Annotated[int | None, Query(ge=0, le=2**62)],
        },
        get=False,
    ),
)
for _routes in RESOURCES:
    add_routes(router, _routes)


# --- API keys: what the shared shape does not cover -----------------------------------
@router.post(f"{ADMIN}/keys/lookup", tags=["keys"])
async def lookup_key(deps: DepsT, who: Caller, body: KeyLookup) -> ApiKey:
    return await handlers.lookup_key(deps, who, body)


@router.post(f"{ADMIN}/keys/{{key_id}}/rotate", tags=["keys"], response_model=KeyCreated)
async def rotate_key(deps: DepsT, who: Caller, key_id: Id, if_match: IfMatch) -> Response:
    return _changed(await handlers.rotate_key(deps, who, key_id, if_match))


@router.post(f"{ADMIN}/keys/{{key_id}}/revoke", tags=["keys"], response_model=ApiKey)
async def revoke_key(deps: DepsT, who: Caller, key_id: Id, if_match: IfMatch) -> Response:
    return _changed(await handlers.revoke_key(deps, who, key_id, if_match))


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
