"""What every CLI command group shares: one HTTP call, one error line, two output forms."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import typer


class CliError(Exception):
    """An expected failure; ``str()`` is the one line printed."""


@dataclass(frozen=True)
class Api:
    """A service's HTTP API: base URL and the header that authenticates us."""

    base_url: str
    headers: dict[str, str]
    timeout_s: float = 10.0

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request; a refused one raises ``CliError`` with the server's reason."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = httpx.request(
                method,
                self.base_url.rstrip("/") + path,
                json=json,
                params=clean,
                headers={**self.headers, **(headers or {})},
                timeout=self.timeout_s,
            )
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach {self.base_url}: {exc}") from None
        if response.status_code >= 400:
            raise CliError(describe_failure(response))
        return response


def describe_failure(response: httpx.Response) -> str:
    """One line from a problem+json or OpenAI-style error body, else the status."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return f"HTTP {response.status_code}: {body['error'].get('message', '')}"
    if isinstance(body, dict) and ("title" in body or "detail" in body):
        return f"HTTP {response.status_code}: {body.get('detail') or body.get('title')}"
    return f"HTTP {response.status_code}: {str(body)[:200]}"


def admin_api(url: str | None = None, key: str | None = None) -> Api:
    """The config service's admin API (``HYPERINFER_CONFIG_URL``, ``HYPERINFER_ADMIN_KEY``)."""
    return Api(
        url or os.environ.get("HYPERINFER_CONFIG_URL", "http://127.0.0.1:8100"),
        {"authorization": f"Bearer {key or os.environ.get('HYPERINFER_ADMIN_KEY', '')}"},
    )


def service_api(env_url: str, default_url: str, headers: dict[str, str]) -> Api:
    """Another service's API, its URL from ``env_url`` when set."""
    return Api(os.environ.get(env_url, default_url), headers)


def emit(data: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    """Print ``data`` as JSON (``--json``) or in its human form."""
    if as_json:
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(render(data))


def table(rows: Iterable[dict[str, Any]], columns: list[str]) -> str:
    """A plain aligned text table of ``columns`` (missing values print as ``-``)."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


JsonOption = typer.Option(False, "--json", help="print JSON instead of a table")
