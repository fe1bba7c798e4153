"""`hyperinfer dlq ...`: the event pipeline's dead-letter queue.

URL from ``HYPERINFER_PIPELINE_URL`` (default http://127.0.0.1:8105), key from
``HYPERINFER_INTERNAL_KEY``::

    hyperinfer dlq list [--limit 50] [--after js:42] [--json]
    hyperinfer dlq show js:42
    hyperinfer dlq replay js:42 [js:43 ...] | --all [--limit 100]
    hyperinfer dlq purge --yes
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from hyperinfer.client.cli._http import Api, CliError, emit, service_api, table

dlq_app = typer.Typer(help="Dead-letter queue of the event pipeline", no_args_is_help=True)
COLUMNS = ["id", "reason", "attempts", "original_subject", "error_class", "detail"]


def pipeline_api() -> Api:
    return service_api(
        "HYPERINFER_PIPELINE_URL",
        "http://127.0.0.1:8105",
        {"x-internal-key": os.environ.get("HYPERINFER_INTERNAL_KEY", "")},
    )


@dlq_app.command("list")
def list_entries(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="how many entries")] = 50,
    after: Annotated[str | None, typer.Option(help="list entries after this id")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List dead letters, oldest first."""
    body = pipeline_api().call("GET", "/internal/dlq", params={"limit": limit, "after": after})
    data = body.json()
    emit(data, as_json, lambda d: _render_list(d))


def _render_list(data: dict[str, Any]) -> str:
    if not data["items"]:
        return "no dead letters"
    return table(data["items"], COLUMNS) + f"\n{data['depth']} dead letter(s) held"


@dlq_app.command("show")
def show(
    entry_id: str, as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False
) -> None:
    """Show one dead letter with its original payload and headers."""
    data = pipeline_api().call("GET", f"/internal/dlq/{entry_id}").json()
    emit(data, as_json, _render_one)


def _render_one(data: dict[str, Any]) -> str:
    entry = data["entry"].get("data", {})
    lines = [f"id: {data['id']}"]
    for key in ("reason", "attempts", "error_class", "detail", "original_subject", "original_id"):
        lines.append(f"{key}: {entry.get(key)}")
    lines.append(f"payload: {entry.get('original_payload', '')[:2000]}")
    return "\n".join(lines)


@dlq_app.command("replay")
def replay(
    entry_ids: Annotated[list[str] | None, typer.Argument(help="ids to replay")] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="replay the oldest --limit")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Publish dead letters again (new message id), paced by the pipeline's replay rate."""
    if not entry_ids and not replay_all:
        raise CliError("name the ids to replay, or pass --all")
    api = Api(pipeline_api().base_url, pipeline_api().headers, timeout_s=600)
    payload = {"ids": None if replay_all else entry_ids, "limit": limit}
    data = api.call("POST", "/internal/dlq/replay", json=payload).json()
    emit(data, as_json, _render_replay)


def _render_replay(data: dict[str, Any]) -> str:
    lines = [f"replayed {r['id']} -> {r['subject']}" for r in data["replayed"]]
    lines += [f"failed {f['id']}: {f['error']}" for f in data["failed"]]
    lines.append(f"{len(data['replayed'])} replayed, {len(data['failed'])} failed")
    return "\n".join(lines)


@dlq_app.command("purge")
def purge(
    yes: Annotated[bool, typer.Option("--yes", help="really delete every dead letter")] = False,
) -> None:
    """Delete every dead letter."""
    if not yes:
        raise CliError("purge deletes every dead letter; pass --yes to confirm")
    data = pipeline_api().call("POST", "/internal/dlq/purge").json()
    typer.echo(f"purged {data['purged']} dead letter(s)")


def register(app: typer.Typer) -> None:
    """Add this module's command groups to the root app."""
    app.add_typer(dlq_app, name="dlq")
