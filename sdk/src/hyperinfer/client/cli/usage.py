"""`hyperinfer usage`: spend and usage from the telemetry service.

``summary`` (grouped usage and cost over a period, paged), ``top`` (largest consumers),
``export`` (CSV), ``dead-letters`` and ``replay`` (refused entries; master key). The
service is ``HYPERINFER_TELEMETRY_URL`` (default http://127.0.0.1:8102), the key
``HYPERINFER_ADMIN_KEY`` (the master admin key, or a team admin's API key, which sees
only its team). Times are ISO 8601, UTC unless they say otherwise; without them, this
month so far.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from hyperinfer.client.cli._http import Api, JsonOption, emit, service_api, table

usage_app = typer.Typer(help="Usage and spend (telemetry service)", no_args_is_help=True)

_GROUP_COLUMNS = {"team": "team_id", "key": "key_id", "model": "model", "backend": "backend_id"}
_METRIC_COLUMNS = ["requests", "errors", "tokens", "cost", "p50_ms", "p95_ms"]

StartOption = typer.Option(None, "--start", help="period start (inclusive), e.g. 2025-01-01")
EndOption = typer.Option(None, "--end", help="period end (exclusive)")
TeamOption = typer.Option(None, "--team", help="only this team")
ModelOption = typer.Option(None, "--model", help="only this model")
BackendOption = typer.Option(None, "--backend", help="only this backend")


def telemetry_api(key: str | None = None) -> Api:
    token = key or os.environ.get("HYPERINFER_ADMIN_KEY", "")
    return service_api(
        "HYPERINFER_TELEMETRY_URL", "http://127.0.0.1:8102", {"authorization": f"Bearer {token}"}
    )


def format_cost(micros: int | None) -> str:
    """Micro-units as currency units, e.g. 1234567 → ``1.234567``."""
    if micros is None:
        return "-"
    return f"{micros / 1_000_000:.6f}"


def display_rows(items: list[dict[str, Any]], groups: list[str]) -> list[dict[str, Any]]:
    """Rows for the human table: group values, then the headline numbers."""
    out = []
    for item in items:
        row = {g: _group_value(item.get(_GROUP_COLUMNS.get(g, g))) for g in groups}
        row.update(
            requests=item.get("requests"),
            errors=item.get("errors"),
            tokens=item.get("total_tokens"),
            cost=format_cost(item.get("cost_micros")),
            p50_ms=item.get("latency_ms_p50"),
            p95_ms=item.get("latency_ms_p95"),
        )
        out.append(row)
    return out


def _group_value(value: Any) -> Any:
    if isinstance(value, str) and value.endswith(("+00:00", "Z")) and "T" in value:
        return value.replace("+00:00", "Z")
    return value


def render_summary(body: dict[str, Any]) -> str:
    groups = list(body.get("group_by") or [])
    lines = [f"usage {body['start']} .. {body['end']}"]
    lines.append(table(display_rows(body["items"], groups), groups + _METRIC_COLUMNS))
    totals = body.get("totals") or {}
    lines.append(
        f"total: {totals.get('requests', 0)} requests, {totals.get('total_tokens', 0)} tokens, "
        f"cost {format_cost(totals.get('cost_micros'))}"
    )
    if body.get("next_cursor"):
        lines.append(f"more: --cursor {body['next_cursor']}")
    return "\n".join(lines)


def render_top(body: dict[str, Any]) -> str:
    by = str(body.get("by") or "team")
    rows = display_rows(body["items"], [by])
    title = f"top {by}s by {body.get('metric')} {body['start']} .. {body['end']}"
    return title + "\n" + table(rows, [by, *_METRIC_COLUMNS])


@usage_app.command("summary")
def summary(
    group_by: str = typer.Option(
        "team", "--group-by", help="comma list: team,key,model,backend,minute,hour,day,month"
    ),
    start: str | None = StartOption,
    end: str | None = EndOption,
    team: str | None = TeamOption,
    key: str | None = typer.Option(None, "--key", help="only this API key id"),
    model: str | None = ModelOption,
    backend: str | None = BackendOption,
    limit: int = typer.Option(100, "--limit", min=1, max=1000, help="groups per page"),
    cursor: str | None = typer.Option(None, "--cursor", help="the page after a previous one"),
    all_pages: bool = typer.Option(False, "--all", help="follow every page"),
    as_json: bool = JsonOption,
) -> None:
    """Usage and cost grouped by team, key, model, backend and/or time."""
    params: dict[str, Any] = {
        "group_by": group_by,
        "start": start,
        "end": end,
        "team_id": team,
        "key_id": key,
        "model": model,
        "backend_id": backend,
        "limit": limit,
        "cursor": cursor,
    }
    body = _fetch_pages(telemetry_api(), params, all_pages)
    emit(body, as_json, render_summary)


def _fetch_pages(api: Api, params: dict[str, Any], all_pages: bool) -> dict[str, Any]:
    body: dict[str, Any] = api.call("GET", "/v1/usage", params=params).json()
    while all_pages and body.get("next_cursor"):
        page = api.call("GET", "/v1/usage", params={**params, "cursor": body["next_cursor"]})
        more = page.json()
        body["items"] += more["items"]
        body["next_cursor"] = more["next_cursor"]
    return body


@usage_app.command("top")
def top(
    by: str = typer.Option("team", "--by", help="team, key, model or backend"),
    metric: str = typer.Option("cost", "--metric", help="cost, tokens, requests or errors"),
    start: str | None = StartOption,
    end: str | None = EndOption,
    team: str | None = TeamOption,
    model: str | None = ModelOption,
    backend: str | None = BackendOption,
    limit: int = typer.Option(10, "--limit", min=1, max=1000),
    as_json: bool = JsonOption,
) -> None:
    """The largest consumers by a metric."""
    params = {
        "by": by,
        "metric": metric,
        "start": start,
        "end": end,
        "team_id": team,
        "model": model,
        "backend_id": backend,
        "limit": limit,
    }
    body = telemetry_api().call("GET", "/v1/usage/top", params=params).json()
    emit(body, as_json, render_top)


@usage_app.command("export")
def export(
    group_by: str = typer.Option("team", "--group-by", help="as for summary"),
    start: str | None = StartOption,
    end: str | None = EndOption,
    team: str | None = TeamOption,
    key: str | None = typer.Option(None, "--key", help="only this API key id"),
    model: str | None = ModelOption,
    backend: str | None = BackendOption,
    output: Path | None = typer.Option(None, "--output", "-o", help="write here, not stdout"),
) -> None:
    """Every group of the period as CSV."""
    params = {
        "group_by": group_by,
        "start": start,
        "end": end,
        "team_id": team,
        "key_id": key,
        "model": model,
        "backend_id": backend,
    }
    text = telemetry_api().call("GET", "/v1/usage/export", params=params).text
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(f"wrote {max(0, text.count(chr(10)) - 1)} rows to {output}")


@usage_app.command("dead-letters")
def dead_letters(
    limit: int = typer.Option(50, "--limit", min=1, max=1000),
    after: str | None = typer.Option(None, "--after", help="the id the previous page ended at"),
    as_json: bool = JsonOption,
) -> None:
    """Usage entries the ledger refused, with why (master admin key)."""
    params = {"limit": limit, "after": after}
    body = telemetry_api().call("GET", "/v1/usage/dead-letters", params=params).json()
    emit(body, as_json, render_dead_letters)


def render_dead_letters(body: dict[str, Any]) -> str:
    text = table(body["items"], ["id", "reason", "attempts", "failed_at", "detail"])
    if body.get("next_after"):
        text += f"\nmore: --after {body['next_after']}"
    return text


@usage_app.command("replay")
def replay(
    ids: list[str] = typer.Argument(..., help="dead-letter ids to put back on the usage stream"),
    as_json: bool = JsonOption,
) -> None:
    """Re-queue dead letters after a fix; each is validated again, none counts twice."""
    body = telemetry_api().call("POST", "/v1/usage/dead-letters/replay", json={"ids": ids}).json()
    emit(body, as_json, render_replay)


def render_replay(body: dict[str, Any]) -> str:
    lines = [f"replayed {r['id']} as {r['stream_id']}" for r in body["replayed"]]
    lines += [f"not found: {m}" for m in body["missing"]]
    return "\n".join(lines) or "nothing replayed"


def register(app: typer.Typer) -> None:
    """Add this module's command groups to the root app."""
    app.add_typer(usage_app, name="usage")
