"""Retries, backoff and per-backend circuit breakers, in process.

``CircuitBreaker`` (one per backend id, kept across snapshots):

- closed: calls pass; ``failure_threshold`` consecutive retryable failures open it;
- open: calls are refused for ``open_s`` (the data plane moves on to the next candidate);
- half-open: after ``open_s`` one probe call at a time passes; a success closes the
  breaker, a failure opens it again for another ``open_s``.

``RetryPolicy``: on a retryable failure (429, 5xx, connect errors, broken streams) the
same backend is tried again up to ``retries_per_backend`` times after a full-jitter
backoff (``uniform(0, min(max_backoff_s, base_s * 2**n))``), or after the upstream's
``Retry-After`` when it sent one; a wait that would pass the request's retry budget
(``budget_s``) is not taken: the next candidate is tried at once instead. Timeouts go to
the next candidate without a retry (a hung backend would hold the request twice).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Literal

from hyperinfer.client.errors import UpstreamError, UpstreamTimeout

State = Literal["closed", "open", "half_open"]


@dataclass
class CircuitBreaker:
    failure_threshold: int = 5
    open_s: float = 10.0
    state: State = "closed"
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False
    times_opened: int = 0

    def allow(self, now: float | None = None) -> bool:
        """May a call go to this backend now? (Claims the probe slot when half-open.)"""
        if self.state == "closed":
            return True
        now = time.monotonic() if now is None else now
        if self.state == "open":
            if now - self.opened_at < self.open_s:
                return False
            self.state, self.probing = "half_open", False
        if self.probing:
            return False
        self.probing = True
        return True

    def success(self) -> None:
        self.state, self.failures, self.probing = "closed", 0, False

    def failure(self, now: float | None = None) -> None:
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.failure_threshold:
            self._open(time.monotonic() if now is None else now)

    def release(self) -> None:
        """A call that ended neither way (the caller went away): free the probe slot."""
        self.probing = False

    def _open(self, now: float) -> None:
        self.state, self.opened_at, self.probing = "open", now, False
        self.times_opened += 1

    def status(self) -> dict[str, object]:
        return {"state": self.state, "failures": self.failures, "times_opened": self.times_opened}


@dataclass
class Breakers:
    """One breaker per backend id."""

    failure_threshold: int = 5
    open_s: float = 10.0
    _by_backend: dict[str, CircuitBreaker] = field(default_factory=dict)

    def get(self, backend_id: str) -> CircuitBreaker:
        breaker = self._by_backend.get(backend_id)
        if breaker is None:
            breaker = self._by_backend[backend_id] = CircuitBreaker(
                self.failure_threshold, self.open_s
            )
        return breaker

    def status(self) -> dict[str, dict[str, object]]:
        return {backend: b.status() for backend, b in sorted(self._by_backend.items())}


@dataclass(frozen=True)
class RetryPolicy:
    retries_per_backend: int = 1
    base_s: float = 0.05
    max_backoff_s: float = 2.0
    budget_s: float = 10.0
    """The most a request spends waiting between attempts, in total."""
    max_attempts: int = 6
    """Attempts over all candidates."""

    def backoff(self, retry: int, error: UpstreamError) -> float:
        """Seconds to wait before retry number ``retry`` (0-based) after ``error``."""
        if error.retry_after_s is not None:
            return error.retry_after_s
        return random.uniform(0, min(self.max_backoff_s, self.base_s * (2**retry)))

    def retry_same_backend(self, error: UpstreamError, retries_done: int) -> bool:
        return (
            error.retryable
            and not isinstance(error, UpstreamTimeout)
            and retries_done < self.retries_per_backend
        )
