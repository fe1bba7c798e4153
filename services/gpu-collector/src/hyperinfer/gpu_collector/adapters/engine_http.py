"""The real engine client: vLLM over plain HTTP, Triton through ``tritonclient.http.aio``.

Every request has a short timeout (``scrape_timeout_s``) so an unreachable engine is
reported within about one timeout, never after a TCP retry storm.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import aiohttp
import httpx
from hyperinfer.gpu_collector.engines import ScrapeTarget
from hyperinfer.gpu_collector.errors import ScrapeFailed
from hyperinfer.gpu_collector.ports import TritonObservation, VllmObservation
from tritonclient.http.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

_TRANSPORT_ERRORS = (
    httpx.HTTPError,
    aiohttp.ClientError,
    InferenceServerException,
    OSError,
    TimeoutError,
)


class HttpEngineClient:
    """``EngineClient`` over the network; one pooled HTTP client for every engine."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), follow_redirects=False)
        self._triton: dict[str, InferenceServerClient] = {}

    async def fetch_vllm(self, target: ScrapeTarget) -> VllmObservation:
        metrics, health = await asyncio.gather(
            self._http.get(target.metrics_url),
            self._http.get(target.base_url + "/health"),
            return_exceptions=True,
        )
        if isinstance(metrics, BaseException):
            raise ScrapeFailed(f"cannot scrape {target.metrics_url}: {describe(metrics)}")
        if metrics.status_code != 200:
            raise ScrapeFailed(f"{target.metrics_url} answered HTTP {metrics.status_code}")
        status = None if isinstance(health, BaseException) else health.status_code
        return VllmObservation(metrics.text, status)

    async def fetch_triton(self, target: ScrapeTarget) -> TritonObservation:
        try:
            return await asyncio.wait_for(self._triton_round(target), self._timeout_s * 3)
        except _TRANSPORT_ERRORS as exc:
            raise ScrapeFailed(
                f"cannot reach Triton at {target.base_url}: {describe(exc)}"
            ) from None

    async def _triton_round(self, target: ScrapeTarget) -> TritonObservation:
        client = self._triton_client(target.base_url)
        if not await client.is_server_live():
            return TritonObservation(live=False, ready=False, model_ready={}, metrics_text=None)
        ready, *models = await asyncio.gather(
            client.is_server_ready(), *(client.is_model_ready(m) for m in target.models)
        )
        text, error = await self._metrics_text(target.metrics_url)
        return TritonObservation(
            live=True,
            ready=bool(ready),
            model_ready=dict(zip(target.models, map(bool, models), strict=True)),
            metrics_text=text,
            metrics_error=error,
        )

    async def _metrics_text(self, url: str) -> tuple[str | None, str | None]:
        try:
            response = await self._http.get(url)
        except httpx.HTTPError as exc:
            return None, f"cannot scrape {url}: {describe(exc)}"
        if response.status_code != 200:
            return None, f"{url} answered HTTP {response.status_code}"
        return response.text, None

    def _triton_client(self, base_url: str) -> InferenceServerClient:
        client = self._triton.get(base_url)
        if client is None:
            parts = urlsplit(base_url)
            client = InferenceServerClient(
                parts.netloc + parts.path.rstrip("/"),
                conn_timeout=self._timeout_s,
                ssl=parts.scheme == "https",
            )
            self._triton[base_url] = client
        return client

    async def forget(self, keep: set[str]) -> None:
        """Close the Triton clients of engines no longer scraped."""
        for url in [u for u in self._triton if u not in keep]:
            await self._triton.pop(url).close()

    async def close(self) -> None:
        await self._http.aclose()
        await self.forget(set())


def describe(exc: BaseException) -> str:
    """One short line for an exception: its class and message."""
    text = str(exc).strip()
    if isinstance(exc, TimeoutError | httpx.TimeoutException) and not text:
        text = "timed out"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
