"""The demo tenant, created through the admin API and safe to run again::

    python -m hyperinfer.config.seed --config-url URL --admin-key KEY --out FILE

Ensures team ``demo``, user ``demo@hyperinfer.local``, the built-in ``echo`` backend
and, when ``HYPERINFER_LOCAL_MODEL_URL`` is set, an ``openai_compatible`` backend
``local-smollm2`` serving ``smollm2-135m`` there; team aliases ``demo-echo`` → echo and
``demo-chat`` → the local model with echo as fallback (echo alone without a local
model), with a routing rule ``demo-chat`` of strategy ``ordered`` so the router sends it
to its first healthy target rather than spreading it over both; and one API key. The
key's plaintext goes only into FILE (mode 0600, JSON with the key, team, aliases and the
ingress URL). On a second run the key in FILE is reused if it still works, else the demo
key is rotated (or created). Nothing secret is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

TEAM = "demo"
USER_EMAIL = "demo@hyperinfer.local"
KEY_NAME = "demo"
ECHO = {"id": "echo", "name": "echo", "kind": "echo", "models": ["echo"]}
LOCAL_MODEL = "smollm2-135m"
LOCAL_BACKEND_ID = "local-smollm2"
DEMO_CHAT = "demo-chat"
BACKEND_FIXED = ("id", "kind")


class SeedError(Exception):
    """The seed cannot finish; ``str()`` is the one line printed."""


@dataclass(frozen=True)
class Admin:
    """The admin API over one HTTP client; refused calls raise ``SeedError``."""

    http: httpx.Client

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, f"/v1/admin{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise SeedError(f"cannot reach the config service: {exc}") from None
        if response.status_code >= 400 and response.status_code != 404:
            detail = response.json().get("detail") if _is_json(response) else response.text
            raise SeedError(f"{method} {path}: HTTP {response.status_code}: {detail}")
        return response

    def first(self, path: str, **params: str) -> dict[str, Any] | None:
        items = self.call("GET", path, params=params).json()["items"]
        return dict(items[0]) if items else None

    def ensure(
        self,
        collection: str,
        found: dict[str, Any] | None,
        body: dict[str, Any],
        fixed: tuple[str, ...] = ("id",),
    ) -> Any:
        """Create the object, or bring the one found in line with ``body``.

        ``fixed`` fields cannot change once created: a mismatch is an error to resolve by hand.
        """
        if found is None:
            return self.call("POST", f"/{collection}", json=body).json()
        for name in fixed:
            if name in body and found.get(name) != body[name]:
                raise SeedError(
                    f"{collection} {found.get('id')} exists with {name}={found.get(name)!r}, "
                    f"the demo needs {body[name]!r}; change or remove it first"
                )
        changed = {k: v for k, v in body.items() if k not in fixed and found.get(k) != v}
        if not changed:
            return found
        headers = {"if-match": f'"{found["version"]}"'}
        path = f"/{collection}/{found['id']}"
        return self.call("PATCH", path, json=changed, headers=headers).json()


def _is_json(response: httpx.Response) -> bool:
    return "json" in response.headers.get("content-type", "")


def ensure_backends(admin: Admin, local_model_url: str | None) -> list[dict[str, str]]:
    """The backends; returns the demo-chat targets, primary first."""
    echo = admin.call("GET", "/backends/echo")
    admin.ensure("backends", echo.json() if echo.status_code == 200 else None, ECHO, BACKEND_FIXED)
    targets = [{"backend_id": "echo", "model": "echo"}]
    if local_model_url:
        local = {
            "id": LOCAL_BACKEND_ID,
            "name": LOCAL_BACKEND_ID,
            "kind": "openai_compatible",
            "base_url": local_model_url,
            "models": [LOCAL_MODEL],
        }
        found = admin.call("GET", f"/backends/{LOCAL_BACKEND_ID}")
        admin.ensure(
            "backends", found.json() if found.status_code == 200 else None, local, BACKEND_FIXED
        )
        targets.insert(0, {"backend_id": LOCAL_BACKEND_ID, "model": LOCAL_MODEL})
    return targets


def ensure_aliases(admin: Admin, chat_targets: list[dict[str, str]]) -> list[str]:
    wanted = {"demo-echo": [{"backend_id": "echo", "model": "echo"}], DEMO_CHAT: chat_targets}
    for name, targets in wanted.items():
        found = admin.first("/aliases", name=name, team_id=TEAM)
        body: dict[str, Any] = {"targets": targets}
        if found is None:
            body.update(name=name, team_id=TEAM)
        admin.ensure("aliases", found, body)
    return sorted(wanted)


def ensure_routing(admin: Admin) -> None:
    """demo-chat goes to its first healthy target (the local model), echo only as fallback."""
    found = admin.first("/routing-rules", name=DEMO_CHAT)
    body = {"name": DEMO_CHAT, "alias": DEMO_CHAT, "strategy": "ordered"}
    admin.ensure("routing-rules", found, body)


def ensure_key(admin: Admin, out: Path, user_id: str) -> tuple[dict[str, Any], str, str]:
    """(key, plaintext, how): the key from ``out`` if it works, else rotated or created."""
    previous = _previous_key(out)
    if previous:
        found = admin.call("POST", "/keys/lookup", json={"key": previous})
        key = found.json() if found.status_code == 200 else None
        if key and key["active"] and key["team_id"] == TEAM:
            return key, previous, "reused"
    existing = admin.first("/keys", team_id=TEAM, name=KEY_NAME, active="true")
    if existing is not None:
        rotated = admin.call("POST", f"/keys/{existing['id']}/rotate").json()
        return rotated, rotated["key"], "rotated"
    body = {"team_id": TEAM, "name": KEY_NAME, "user_id": user_id}
    created = admin.call("POST", "/keys", json=body).json()
    return created, created["key"], "created"


def _previous_key(out: Path) -> str | None:
    try:
        value = json.loads(out.read_text()).get("api_key")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def seed(admin: Admin, out: Path, local_model_url: str | None, ingress_url: str) -> str:
    """Bring the demo tenant into being; returns the line to print."""
    team = admin.first("/teams", name=TEAM)
    admin.ensure("teams", team, {"id": TEAM, "name": TEAM})
    user = admin.first("/users", email=USER_EMAIL) or admin.ensure(
        "users", None, {"email": USER_EMAIL, "role": "member", "team_id": TEAM}
    )
    aliases = ensure_aliases(admin, ensure_backends(admin, local_model_url))
    ensure_routing(admin)
    key, plaintext, how = ensure_key(admin, out, user["id"])
    _write_private(
        out,
        {
            "api_key": plaintext,
            "key_id": key["id"],
            "team_id": TEAM,
            "team": TEAM,
            "alias": DEMO_CHAT,  # the one to try first
            "aliases": aliases,
            "local_model": LOCAL_MODEL if local_model_url else None,
            "ingress_url": ingress_url,
            "config_url": str(admin.http.base_url).rstrip("/"),
        },
    )
    return (
        f"demo tenant ready: team {TEAM}, key {key['id']} ({key['key_hint']}, {how}), "
        f"aliases {', '.join(aliases)}; key written to {out}"
    )


def _write_private(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hyperinfer.config.seed", description=__doc__)
    parser.add_argument("--config-url", default=os.environ.get("HYPERINFER_CONFIG_URL"))
    parser.add_argument("--admin-key", default=os.environ.get("HYPERINFER_ADMIN_KEY"))
    parser.add_argument("--out", type=Path, required=True, help="where the demo key is written")
    parser.add_argument(
        "--local-model-url",
        default=os.environ.get("HYPERINFER_LOCAL_MODEL_URL"),
        help="OpenAI-compatible base URL of the local model (env HYPERINFER_LOCAL_MODEL_URL)",
    )
    parser.add_argument(
        "--ingress-url", default=os.environ.get("HYPERINFER_INGRESS_URL", "http://127.0.0.1:8080")
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    url = args.config_url or "http://127.0.0.1:8100"
    if not args.admin_key:
        sys.stderr.write("seed: no admin key (--admin-key or HYPERINFER_ADMIN_KEY)\n")
        return 2
    headers = {"authorization": f"Bearer {args.admin_key}"}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
            line = seed(Admin(http), args.out, args.local_model_url or None, args.ingress_url)
    except SeedError as exc:
        sys.stderr.write(f"seed: {exc}\n")
        return 1
    sys.stdout.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
