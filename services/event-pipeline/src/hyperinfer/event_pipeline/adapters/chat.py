"""``ChatRunner`` adapters: the real data plane, and a fake beside it for tests.

An ``inference.requested`` job names its API key by id (``api_key_id`` + ``team_id``),
never by plaintext. ``DataPlaneChatRunner`` runs the chat through a ``DataPlane`` of the
pipeline's own (``origin="pipeline"``) as that key, through the trusted entry point
``hyperinfer.client.trusted.TrustedCallers``: the key must still be active in the
config snapshot and belong to the job's team; then the ingress's path follows — scopes,
alias, one quota reservation, the upstream call with fallbacks, settle and usage event.

Errors become retry classes: a request that cannot succeed as it is (unknown, revoked or
expired key, missing scope, unknown alias, bad request, a request larger than a limit)
is permanent; quota waits, a config not loaded yet, the quota store down and upstream
failures are transient (with the wait they carry).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hyperinfer.client.dataplane import DataPlane
from hyperinfer.client.errors import HyperInferError, RateLimited, UpstreamError
from hyperinfer.client.trusted import TrustedCallers
from hyperinfer.event_pipeline.errors import JobFailed, PermanentJobError, TransientJobError

_STREAM_FIELDS = ("stream", "stream_options")


class DataPlaneChatRunner:
    """Runs a job's chat as the job's key (by id) through an in-process ``DataPlane``."""

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane
        self._callers = TrustedCallers(plane)

    async def run_chat(
        self, request: dict[str, Any], *, team_id: str, api_key_id: str
    ) -> dict[str, Any]:
        body = {k: v for k, v in request.items() if k not in _STREAM_FIELDS}  # one whole answer
        try:
            caller = self._callers.caller(api_key_id, team_id)
            outcome = await self._plane.chat(caller, body)
        except HyperInferError as exc:
            raise classify_client_error(exc) from exc
        return outcome.body


def classify_client_error(exc: HyperInferError) -> JobFailed:
    """Transient when waiting can help (with the wait it names), else permanent."""
    detail = f"{type(exc).__name__} ({exc.status} {exc.code or exc.error_type}): {exc.message}"
    if isinstance(exc, RateLimited):
        if exc.code == "request_too_large":  # larger than the limit: no wait helps
            return PermanentJobError(detail)
        return TransientJobError(detail, exc.retry_after_ms / 1000 or None)
    if isinstance(exc, UpstreamError):
        if exc.retryable or exc.status >= 500:
            return TransientJobError(detail, exc.retry_after_s)
        return PermanentJobError(detail)
    if exc.status >= 500:  # NotReady, QuotaUnavailable
        return TransientJobError(detail)
    return PermanentJobError(detail)


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
