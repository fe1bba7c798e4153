"""Errors of the event pipeline, translated once (problem+json) in ``api.py``.

::

    PipelineError                         status
    ├── Unauthorized                      401   missing or wrong X-Internal-Key
    ├── InvalidEvent                      422   not an envelope, unknown type/major, bad payload
    ├── QueueFull                         429   admission refused (+ Retry-After)
    ├── DlqEntryNotFound                  404   no such dead letter
    ├── ReplayRateLimited                 429   replays are paced (+ Retry-After)
    └── QueueUnavailable                  503   the queue backend cannot be reached

    JobFailed                             raised by processors; decides the retry
    ├── TransientJobError                 nak with backoff (honours retry_after_s)
    └── PermanentJobError                 dead-lettered at once, then terminated

Any other exception a processor raises counts as transient.
"""

from __future__ import annotations

from hyperinfer.contracts import Priority


class PipelineError(Exception):
    status = 500
    title = "internal error"
    retry_after_s: int | None = None


class Unauthorized(PipelineError):
    status = 401
    title = "unauthorized"


class InvalidEvent(PipelineError):
    status = 422
    title = "invalid event"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class QueueFull(PipelineError):
    """Admission refused this priority; try again after ``retry_after_s``."""

    status = 429
    title = "queue full"

    def __init__(self, priority: Priority, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.priority = priority
        self.retry_after_s = retry_after_s


class DlqEntryNotFound(PipelineError):
    status = 404
    title = "dead letter not found"


class ReplayRateLimited(PipelineError):
    status = 429
    title = "replay rate limited"

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class QueueUnavailable(PipelineError):
    status = 503
    title = "queue unavailable"


class JobFailed(Exception):
    """A processor could not finish a job."""


class TransientJobError(JobFailed):
    """Worth retrying; ``retry_after_s`` (from an upstream's Retry-After) is a floor."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentJobError(JobFailed):
    """Retrying cannot help (a 4xx from a webhook, a request the data plane refuses)."""
