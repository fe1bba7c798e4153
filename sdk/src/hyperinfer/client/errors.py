"""The exception tree of the data plane, translated once at the edge.

::

    HyperInferError                      status  OpenAI error type
    ├── InvalidRequest                   400     invalid_request_error
    │   └── PayloadTooLarge              413     invalid_request_error
    ├── AuthenticationFailed             401     authentication_error
    ├── PermissionDenied                 403     permission_error
    ├── ModelNotFound                    404     not_found_error
    ├── RateLimited                      429     rate_limit_error (+ Retry-After)
    ├── QuotaUnavailable                 503     service_unavailable (quota store down, fail-closed)
    ├── NotReady                         503     service_unavailable (no config snapshot loaded yet)
    └── UpstreamError                    502     upstream_error    (a provider failed)
        ├── UpstreamStatusError          its status mapped: 4xx as is, 5xx → 502, 429 → 429
        ├── UpstreamTimeout              504     timeout
        ├── UpstreamConnectError         502     upstream_unreachable
        ├── UpstreamProtocolError        502     upstream_protocol_error (malformed JSON/SSE)
        └── NoHealthyBackend             503     service_unavailable (every circuit open)

Providers raise only ``UpstreamError`` subclasses; ``retryable`` says whether the
data plane may try the next candidate (5xx, 429, timeouts, connect errors).
"""

from __future__ import annotations

from typing import Any


class HyperInferError(Exception):
    """Base of every error the data plane raises on purpose."""

    status: int = 500
    error_type: str = "internal_error"
    code: str | None = None

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_openai(self) -> dict[str, Any]:
        """The body OpenAI's SDK parses into a typed exception."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": None,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(HyperInferError):
    status = 400
    error_type = "invalid_request_error"


class PayloadTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class AuthenticationFailed(HyperInferError):
    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(HyperInferError):
    status = 403
    error_type = "permission_error"


class ModelNotFound(HyperInferError):
    status = 404
    error_type = "not_found_error"
    code = "model_not_found"


class RateLimited(HyperInferError):
    """A quota said no: ``retry_after_ms`` and the x-ratelimit-* numbers go in headers."""

    status = 429
    error_type = "rate_limit_error"

    def __init__(
        self,
        message: str,
        *,
        retry_after_ms: int = 0,
        code: str | None = None,
        limit_headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after_ms = retry_after_ms
        self.limit_headers = limit_headers or {}

    def headers(self) -> dict[str, str]:
        seconds = max(1, -(-self.retry_after_ms // 1000))
        return {
            "retry-after": str(seconds),
            "retry-after-ms": str(self.retry_after_ms),
            **self.limit_headers,
        }


class QuotaUnavailable(HyperInferError):
    status = 503
    error_type = "service_unavailable"
    code = "quota_unavailable"


class NotReady(HyperInferError):
    """This node has no config snapshot yet: it cannot tell a good key from a bad one."""

    status = 503
    error_type = "service_unavailable"
    code = "config_not_loaded"


class UpstreamError(HyperInferError):
    """A provider call failed. ``retryable``: the next candidate may be tried."""

    status = 502
    error_type = "upstream_error"
    retryable = True

    def __init__(
        self, message: str, *, code: str | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an error status.

    429 stays 429, 5xx become 502, a 4xx (the caller's fault) keeps its status and
    is not retried on another backend.
    """

    def __init__(
        self,
        upstream_status: int,
        message: str,
        *,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, code=code, retry_after_s=retry_after_s)
        self.upstream_status = upstream_status
        self.retryable = upstream_status == 429 or upstream_status >= 500
        if upstream_status == 429:
            self.status, self.error_type = 429, "rate_limit_error"
        elif upstream_status >= 500:
            self.status = 502
        elif upstream_status in (401, 403):
            # our credentials for the upstream are wrong: not the caller's fault
            self.status, self.retryable = 502, True
        else:
            self.status, self.error_type = upstream_status, "invalid_request_error"
            if upstream_status == 404:
                self.error_type = "not_found_error"

    def headers(self) -> dict[str, str]:
        if self.status == 429 and self.retry_after_s is not None:
            return {"retry-after": str(max(1, round(self.retry_after_s)))}
        return {}


class UpstreamTimeout(UpstreamError):
    status = 504
    error_type = "timeout"
    code = "upstream_timeout"


class UpstreamConnectError(UpstreamError):
    code = "upstream_unreachable"


class UpstreamProtocolError(UpstreamError):
    """Malformed JSON, a broken SSE frame, or a stream cut before its end."""

    code = "upstream_protocol_error"


class NoHealthyBackend(UpstreamError):
    status = 503
    error_type = "service_unavailable"
    code = "no_healthy_backend"
