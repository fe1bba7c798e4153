"""``WebhookSender`` over httpx (pooled keep-alive connections)."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from hyperinfer.event_pipeline.errors import TransientJobError


class HttpWebhookSender:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, float | None]:
        try:
            response = await self._client.post(url, content=body, headers=dict(headers))
        except httpx.HTTPError as exc:
            raise TransientJobError(f"webhook unreachable: {type(exc).__name__}: {exc}") from None
        return response.status_code, retry_after_s(response.headers.get("retry-after"))


def retry_after_s(value: str | None) -> float | None:
    """Retry-After in seconds (the delta form; an HTTP date is ignored)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
