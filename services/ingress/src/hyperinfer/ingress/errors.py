"""The ingress's errors: the data plane's tree, translated once, in two shapes.

The tree is ``hyperinfer.client.errors`` (drawn there)::

    HyperInferError ─ InvalidRequest (400) ─ PayloadTooLarge (413)
                    ├ AuthenticationFailed (401)   ├ PermissionDenied (403)
                    ├ ModelNotFound (404)          ├ RateLimited (429 + Retry-After)
                    ├ QuotaUnavailable (503)       ├ NotReady (503)
                    └ UpstreamError (502/504/...)

``/v1/chat/completions``, ``/v1/embeddings`` and ``/v1/models`` answer OpenAI's
``{"error": {"message", "type", "param", "code"}}``; ``/v1/messages`` answers
Anthropic's ``{"type": "error", "error": {"type", "message"}}``. The statuses are the
same, so both official SDKs raise their typed exceptions. Anything unexpected is a 500
in the same shape (logged with its traceback; the body says only "internal error").
"""

from __future__ import annotations

from typing import Any

import orjson
from hyperinfer.client.errors import HyperInferError

ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


class InternalError(HyperInferError):
    """Something the ingress did not expect (a bug): 500, details only in the log."""

    status = 500
    error_type = "internal_error"
    code = "internal_error"


def openai_body(exc: HyperInferError) -> bytes:
    return orjson.dumps(exc.to_openai())


def anthropic_error(exc: HyperInferError) -> dict[str, Any]:
    kind = ANTHROPIC_TYPES.get(exc.status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": exc.message}}


def anthropic_body(exc: HyperInferError) -> bytes:
    return orjson.dumps(anthropic_error(exc))
