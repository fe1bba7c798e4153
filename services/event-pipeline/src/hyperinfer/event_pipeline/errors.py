"""Errors of the event pipeline, translated once into RFC 9457 problem+json by the
runtime's problem handlers (installed in ``api.mount``).

::

    PipelineError               status  type (urn:hyperinfer:problem:<code>)
    ├── Unauthorized            401     unauthorized           missing or wrong X-Internal-Key
    ├── InvalidEvent            422     invalid-event          not an envelope, unknown
    │                                                          type/major, bad payload (+ reason)
    ├── QueueFull               429     queue-full             admission refused (+ Retry-After)
    ├── DlqEntryNotFound        404     dead-letter-not-found  no such dead letter
    ├── ReplayRateLimited       429     replay-rate-limited    replays are paced (+ Retry-After)
    └── QueueUnavailable        503     queue-unavailable      the queue backend cannot be reached

    JobFailed                             raised by processors; decides the retry
    ├── TransientJobError                 nak with backoff (honours retry_after_s)
    └── PermanentJobError                 dead-lettered at once, then terminated

Any other exception a processor raises counts as transient.
"""

from __future__ import annotations

from hyperinfer.contracts import Priority
from hyperinfer.runtime.problems import ProblemError


class PipelineError(ProblemError):
    title = "internal error"
    retry_after_s: int | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.retry_after_s is None else {"retry-after": str(self.retry_after_s)}


class Unauthorized(PipelineError):
    status = 401
    code = "unauthorized"
    title = "unauthorized"


class InvalidEvent(PipelineError):
    status = 422
    code = "invalid-event"
    title = "invalid event"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail, reason=reason)
        self.reason = reason


class QueueFull(PipelineError):
    """Admission refused this priority; try again after ``retry_after_s``."""

    status = 429
    code = "queue-full"
    title = "queue full"

    def __init__(self, priority: Priority, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.priority = priority
        self.retry_after_s = retry_after_s


class DlqEntryNotFound(PipelineError):
    status = 404
    code = "dead-letter-not-found"
    title = "dead letter not found"


class ReplayRateLimited(PipelineError):
    status = 429
    code = "replay-rate-limited"
    title = "replay rate limited"

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class QueueUnavailable(PipelineError):
    status = 503
    code = "queue-unavailable"
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
