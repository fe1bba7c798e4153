"""``hyperinfer`` commands for the config service's admin API.

``team create|list``, ``key create|list|revoke|rotate``, ``alias set|list``,
``quota set``, ``backend add|list``, ``config show|version``. Each prints a human
form or, with ``--json``, the API's JSON. The service URL and admin key come from
``--config-url``/``--admin-key`` or ``HYPERINFER_CONFIG_URL``/``HYPERINFER_ADMIN_KEY``.
Upstream credentials are read from an environment variable or stdin, never from the
command line (which shells keep in their history).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from hyperinfer.client.cli._http import Api, CliError, JsonOption, admin_api, emit, table

ADMIN = "/v1/admin"

UrlOption = Annotated[
    str | None,
    typer.Option("--config-url", envvar="HYPERINFER_CONFIG_URL", help="config service URL"),
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--admin-key", envvar="HYPERINFER_ADMIN_KEY", help="admin key", show_default=False
    ),
]

team_app = typer.Typer(help="Teams.", no_args_is_help=True)
key_app = typer.Typer(help="API keys.", no_args_is_help=True)
alias_app = typer.Typer(help="Model aliases.", no_args_is_help=True)
quota_app = typer.Typer(help="Quotas and budgets.", no_args_is_help=True)
backend_app = typer.Typer(help="Providers and backends.", no_args_is_help=True)
config_app = typer.Typer(help="The versioned config snapshot.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this module's command groups to the root app."""
    app.add_typer(team_app, name="team")
    app.add_typer(key_app, name="key")
    app.add_typer(alias_app, name="alias")
    app.add_typer(quota_app, name="quota")
    app.add_typer(backend_app, name="backend")
    app.add_typer(config_app, name="config")


def _api(url: str | None, key: str | None) -> Api:
    if not key:
        raise CliError("no admin key: pass --admin-key or set HYPERINFER_ADMIN_KEY")
    return admin_api(url, key)


def _all(api: Api, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every item of a paged listing."""
    return list(_pages(api, path, dict(params or {})))


def _pages(api: Api, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    params["limit"] = 500
    while True:
        page = api.call("GET", path, params=params).json()
        yield from page["items"]
        if not page.get("next_cursor"):
            return
        params["cursor"] = page["next_cursor"]


def _one(api: Api, path: str, params: dict[str, Any]) -> dict[str, Any] | None:
    items = api.call("GET", path, params=params).json()["items"]
    return items[0] if items else None


def _upsert(api: Api, collection: str, found: dict[str, Any] | None, body: dict[str, Any]) -> Any:
    """PATCH the object found (guarded by its version) or POST a new one."""
    if found is None:
        return api.call("POST", f"{ADMIN}/{collection}", json=body).json()
    guard = {"if-match": f'"{found["version"]}"'}
    path = f"{ADMIN}/{collection}/{found['id']}"
    return api.call("PATCH", path, json=body, headers=guard).json()


# --- teams ---------------------------------------------------------------------------
@team_app.command("create")
def team_create(
    name: Annotated[str, typer.Argument(help="team name")],
    team_id: Annotated[
        str | None, typer.Option("--id", help="team id (default: generated)")
    ] = None,
    budget_micros: Annotated[
        int | None, typer.Option(help="budget per period, in micro-units of currency")
    ] = None,
    failure_policy: Annotated[str, typer.Option(help="closed or open")] = "closed",
    as_json: bool = JsonOption,
    url: UrlOption = None,
    admin_key: KeyOption = None,
) -> None:
    """Create a team."""
    body = {"id": team_id, "name": name, "budget_micros": budget_micros}
    body = {k: v for k, v in body.items() if v is not None}
    body["failure_policy"] = failure_policy
    team = _api(url, admin_key).call("POST", f"{ADMIN}/teams", json=body).json()
    emit(team, as_json, lambda t: f"created team {t['id']} ({t['name']})")


@team_app.command("list")
def team_list(
    name: Annotated[str | None, typer.Option(help="only this name")] = None,
    as_json: bool = JsonOption,
    url: UrlOption = None,
    admin_key: KeyOption = None,
) -> None:
    """List teams."""
    teams = _all(_api(url, admin_key), f"{ADMIN}/teams", {"name": name})
    emit(teams, as_json, lambda rows: table(rows, ["id", "name", "budget_micros", "version"]))


# --- keys ----------------------------------------------------------------------------
@key_app.command("create")
def key_create(
    team: Annotated[str, typer.Option("--team", help="team id")],
    name: Annotated[str, typer.Option(help="a label for the key")] = "",
    user: Annotated[str | None, typer.Option("--user", help="owning user id")] = None,
    scope: Annotated[list[str] | None, typer.Option("--scope", help="repeatable")] = None,
    expires_at: Annotated[
        str | None, typer.Option(help="ISO 8601 time with offset, e.g. 2027-01-01T00:00:00Z")
    ] = None,
    as_json: bool = JsonOption,
    url: UrlOption = None,
    admin_key: KeyOption = None,
) -> None:
    """Create an API key; its plaintext is printed this once."""
    body = {
        "team_id": team,
        "name": name,
        "user_id": user,
        "scopes": scope or [],
        "expires_at": expires_at,
    }
    created = _api(url, admin_key).call("POST", f"{ADMIN}/keys", json=body).json()
    emit(created, as_json, _render_new_key)


def _render_new_key(key: dict[str, Any]) -> str:
    return (
        f"created key {key['id']} for team {key['team_id']}\n"
        f"{key['key']}\n"
        "store it now: the key is not shown again"
    )


@key_app.command("list")
def key_list(
    team: Annotated[str | None, typer.Option("--team", help="only this team")] = None,
    active_only: Annotated[bool, typer.Option("--active-only", help="hide revoked keys")] = False,
    as_json: bool = JsonOption,
    url: UrlOption = None,
    admin_key: KeyOption = None,
) -> None:
    """List API keys (hints only, never the keys)."""
    params = {"team_id": team, "active": True if active_only else None}
    keys = _all(_api(url, admin_key), f"{ADMIN}/keys", params)
    columns = ["id", "team_id", "name", "key_hint", "scopes", "active", "expires_at"]
    emit(keys, as_json, lambda rows: table(rows, columns))


@key_app.command("revoke")
def key_revoke(
    key_id: Annotated[str, typer.Argument(help="key id (key_...)")],
    as_json: bool = JsonOption,
    url: UrlOption = None,
    admin_key: KeyOption = None,
) -> None:
    """Revoke a key: it stops working on every node within a second."""
    key = _api(url, admin_key).call("POST", f"{ADMIN}/keys/{key_id}/revoke").json()
    emit(key, as_json, lambda k: f"revoked key {k['id']} ({k['key_hint']})")


@key_app.command("rotate")
def key_rotate(
    key_id: Annotated[str, typer.Argument(help="key id (key_...)")],
    as_json: bool = JsonOption,
    url: UrlOption = None,
    admin_key: KeyOption = None,
) -> None:
    """Give a key a new plaintext (printed this once); the old one stops working."""
    key = _api(url, admin_key).call("POST", f"{ADMIN}/keys/{key_id}/rotate").json()
    emit(key, as_json, _render_new_key)


# --- aliases -------------------------------------------------------------------------
def _target(spec: str) -> dict[str, str]:
    backend, sep, model = spec.partition(":")
    if not sep or not backend or not model:
        raise CliError(f"--target must be BACKEND_ID:MODEL, got {spec!r}")
    return {"backend_id": backend, "model": model}


@alias_app.command("set")
def alias_set(
    name: Annotated[str, typer.Argument(help="alias name clients ask for")],
    target: Annotated[
        list[str], typer.Option("--target", help="BACKEND_ID:MODEL; first primary, rest fallbacks")
    ],
    team: Annotated[
        str | None, typer.Option("--team", help="team id (default: a global alias)")
    ] = None,
    as_json: bool = JsonOption,
    url: UrlOption = None,
    admin_key: KeyOption = None,
) -> None:
    """Create or replace an alias → ordered targets."""
    api = _api(url, admin_key)
    targets = [_target(t) for t in target]
    where = {"name": name, "team_id": team, "scope": None if team else "global"}
    found = _one(api, f"{ADMIN}/aliases", where)
    body: dict[str, Any] = {"targets": targets}
    if found is None:
        body.update(name=name, team_id=team)
    alias = _upsert(api, "aliases", found, body)
    emit(alias, as_json, _render_alias)


def _render_alias(alias: dict[str, Any]) -> str:
    chain = " → ".join(f"{t['backend_id']}:{t['model']}" for t in alias["targets"])
    return f"{alias['name']} ({alias['team_id'] or 'global'}): {chain}"


@alias_app.command("list")
def alias_list(
    team: Annotated[str | None, typer.Option("--team", help="only this team's")] = None,
    as_json: bool = JsonOption,
    url: UrlOption = None,
    admin_key: KeyOption = None,
) -> None:
    """List aliases."""
    aliases = _all(_api(url, admin_key), f"{ADMIN}/aliases", {"team_id": team})
    emit(aliases, as_json, lambda rows: "\n".join(_render_alias(a) for a in rows) or "no aliases")


# --- quotas --------------------------------------------------------------------------
@quota_app.command("set")
def quota_set(
    team: Annotated[str | None, typer.Option("--team", help="a team-wide quota")] = None,
    key: Annotated[str | None, typer.Option("--key", help="a per-key quota (key id)")] = None,
    rpm: Annotated[int | None, typer.Option(help="requests per minute")] = None,
    tpm: Annotated[int | None, typer.Option(help="tokens per minute")] = None,
    budget_micros: Annotated[int | None, typer.Option(help="hard budget per period")] = None,
    soft_limit_micros: Annotated[int | None, typer.Option(help="alert threshold")] = None,
    grace_micros: Annotated[int | None, typer.Option(help="allowed overshoot")] = None,
    period: Annotated[str | None, typer.Option(help="daily, weekly or monthly")] = None,
    as_json: bool = JsonOption,
    url: UrlOption = None,
    admin_key: KeyOption = None,
) -> None:
    """Create or update the quota of a team or a key (only the limits given change)."""
    if (team is None) == (key is None):
        raise CliError("give exactly one of --team or --key")
    scope, subject = ("team", team) if team else ("key", key)
    limits = {
        "rpm": rpm,
        "tpm": tpm,
        "budget_micros": budget_micros,
        "soft_limit_micros": soft_limit_micros,
        "grace_micros": grace_micros,
        "budget_period": period,
    }
    body: dict[str, Any] = {k: v for k, v in limits.items() if v is not None}
    api = _api(url, admin_key)
    found = _one(api, f"{ADMIN}/quotas", {"scope": scope, "subject_id": subject})
    if found is None:
        body.update(scope=scope, subject_id=subject)
    quota = _upsert(api, "quotas", found, body)
    emit(quota, as_json, _render_quota)


def _render_quota(q: dict[str, Any]) -> str:
    limits = ("rpm", "tpm", "budget_micros", "soft_limit_micros", "grace_micros")
    shown = ", ".join(f"{name}={q[name]}" for name in limits if q.get(name) is not None)
    return f"quota {q['scope']} {q['subject_id']} ({q['budget_period']}): {shown or 'no limits'}"


# --- backends ------------------------------------------------------------------------
@backend_app.command("add")
def backend_add(
    name: Annotated[str, typer.Argument(help="backend name")],
    kind: Annotated[
        str,
        typer.Option(help="openai, anthropic, gemini, openai_compatible, triton or echo"),
    ],
    backend_id: Annotated[str | None, typer.Option("--id", help="backend id")] = None,
    base_url: Annotated[str, typer.Option(help="upstream base URL")] = "",
    model: Annotated[list[str] | None, typer.Option("--model", help="repeatable")] = None,
    weight: Annotated[float, typer.Option(help="routing weight")] = 1.0,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="repeatable")] = None,
    timeout_s: Annotated[float, typer.Option("--timeout", help="seconds")] = 60.0,
    api_key_env: Annotated[
        str | None, typer.Option(help="read the upstream API key from this env variable")
    ] = None,
    api_key_stdin: Annotated[
        bool, typer.Option("--api-key-stdin", help="read the upstream API key from stdin")
    ] = False,
    as_json: bool = JsonOption,
    url: UrlOption = None,
    admin_key: KeyOption = None,
) -> None:
    """Add a provider/backend (credentials are encrypted by the service)."""
    body: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "base_url": base_url,
        "models": model or [],
        "weight": weight,
        "tags": tag or [],
        "timeout_s": timeout_s,
    }
    if backend_id:
        body["id"] = backend_id
    secret = _upstream_key(api_key_env, api_key_stdin)
    if secret:
        body["credentials"] = {"api_key": secret}
    backend = _api(url, admin_key).call("POST", f"{ADMIN}/backends", json=body).json()
    emit(backend, as_json, lambda b: f"added backend {b['id']} ({b['kind']} {b['base_url']})")


def _upstream_key(env: str | None, stdin: bool) -> str | None:
    if env and stdin:
        raise CliError("give one of --api-key-env or --api-key-stdin")
    if env:
        value = os.environ.get(env)
        if not value:
            raise CliError(f"environment variable {env} is empty or unset")
        return value
    if stdin:
        value = sys.stdin.readline().strip()
        if not value:
            raise CliError("no API key on stdin")
        return value
    return None


@backend_app.command("list")
def backend_list(
    kind: Annotated[str | None, typer.Option(help="only this kind")] = None,
    as_json: bool = JsonOption,
    url: UrlOption = None,
    admin_key: KeyOption = None,
) -> None:
    """List backends (credentials are never shown)."""
    backends = _all(_api(url, admin_key), f"{ADMIN}/backends", {"kind": kind})
    columns = ["id", "name", "kind", "base_url", "models", "weight", "has_credentials"]
    emit(backends, as_json, lambda rows: table(rows, columns))


# --- config --------------------------------------------------------------------------
@config_app.command("show")
def config_show(
    as_json: bool = JsonOption, url: UrlOption = None, admin_key: KeyOption = None
) -> None:
    """The current config snapshot (key hashes and ciphertexts only)."""
    snapshot = _api(url, admin_key).call("GET", "/v1/config/sync").json()
    emit(snapshot, as_json, _render_snapshot)


def _render_snapshot(s: dict[str, Any]) -> str:
    lines = [
        f"config version {s['version']} (generated {s['generated_at']})",
        f"teams {len(s['teams'])}, keys {len(s['keys'])}, backends {len(s['backends'])}, "
        f"quotas {len(s['quotas'])}, prices {len(s['prices'])} (version {s['price_version']})",
    ]
    lines += [f"  alias {_render_alias(a)}" for a in s["aliases"]]
    return "\n".join(lines)


@config_app.command("version")
def config_version(
    as_json: bool = JsonOption, url: UrlOption = None, admin_key: KeyOption = None
) -> None:
    """The committed config version, and the one stored in Redis."""
    info = _api(url, admin_key).call("GET", "/v1/config/version").json()
    emit(
        info,
        as_json,
        lambda v: (
            f"{v['version']} (published {v['published_version']}, redis {v['redis_version']})"
        ),
    )
