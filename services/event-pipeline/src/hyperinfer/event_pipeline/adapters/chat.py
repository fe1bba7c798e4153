"""``ChatRunner`` adapters: the data plane's client, and a fake beside it for tests.

The data-plane client (``hyperinfer.client.HyperInferClient``) is being built in
parallel; ``load_data_plane`` finds it when it is installed and returns ``None``
otherwise, so the service starts either way (chat jobs are then dead-lettered with
a clear reason and can be replayed once the data plane is configured).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from hyperinfer.event_pipeline.errors import PermanentJobError, TransientJobError


class DataPlaneChatRunner:
    """Runs a chat through ``HyperInferClient.chat`` and maps its errors to retry classes."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def run_chat(
        self, request: dict[str, Any], *, team_id: str, api_key_id: str
    ) -> dict[str, Any]:
        try:
            response = await self._client.chat(request)
        except Exception as exc:
            raise classify_client_error(exc) from exc
        dump = getattr(response, "model_dump", None)
        return dict(dump(mode="json")) if callable(dump) else dict(response)


def classify_client_error(exc: Exception) -> Exception:
    """Retryable data-plane errors (429, 5xx, timeouts, quota store down) are transient."""
    retryable = bool(getattr(exc, "retryable", False))
    status = int(getattr(exc, "status", 500))
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is None and getattr(exc, "retry_after_ms", None):
        retry_after = exc.retry_after_ms / 1000  # type: ignore[attr-defined]
    if retryable or status in (429, 503) or status >= 500:
        return TransientJobError(f"{type(exc).__name__}: {exc}", retry_after)
    return PermanentJobError(f"{type(exc).__name__}: {exc}")


def load_data_plane(redis_url: str, api_key: str) -> DataPlaneChatRunner | None:
    """The real client, if the data-plane library ships ``HyperInferClient`` yet."""
    try:
        module = importlib.import_module("hyperinfer.client")
    except ImportError:
        return None
    factory = getattr(module, "HyperInferClient", None)
    if factory is None:
        return None
    return DataPlaneChatRunner(factory(redis_url=redis_url, api_key=api_key))


class FakeChatRunner:
    """An in-memory data plane: answers with a canned completion, or fails as told."""

    def __init__(self, fail_with: Callable[[dict[str, Any]], Exception | None] | None = None):
        self.calls: list[dict[str, Any]] = []
        self._fail_with = fail_with

    async def run_chat(
        self, request: dict[str, Any], *, team_id: str, api_key_id: str
    ) -> dict[str, Any]:
        self.calls.append(request)
        error = self._fail_with(request) if self._fail_with else None
        if error is not None:
            raise error
        last = (request.get("messages") or [{}])[-1].get("content", "")
        return {
            "id": f"chatcmpl-fake-{len(self.calls)}",
            "object": "chat.completion",
            "model": request.get("model", "fake"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"echo: {last}"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        }
