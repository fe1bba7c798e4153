"""Pure policy of the pipeline: admission by priority, retry backoff, slot scheduling.

No I/O here; the worker, the publisher and the tests drive these with plain numbers.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from hyperinfer.contracts import Priority
from hyperinfer.event_pipeline.ports import QueueState

SHARED = (Priority.HIGH, Priority.NORMAL, Priority.LOW)
"""Priorities that share slots by weight; CRITICAL is served strictly first."""


@dataclass(frozen=True)
class Admission:
    admitted: bool
    fill: float
    threshold: float
    retry_after_s: int


@dataclass(frozen=True)
class AdmissionPolicy:
    """LOW is refused first as the queues fill; CRITICAL only at its hard cap.

    ``fill`` is the larger of the priority's own queue fill and the fill of all
    queues together, so a busy system sheds LOW before its LOW queue is full.
    """

    thresholds: Mapping[Priority, float]
    retry_after_s: int = 2

    @classmethod
    def from_percent(
        cls, low: float, normal: float, high: float, retry_after_s: int = 2
    ) -> AdmissionPolicy:
        return cls(
            {
                Priority.LOW: low / 100,
                Priority.NORMAL: normal / 100,
                Priority.HIGH: high / 100,
                Priority.CRITICAL: 1.0,
            },
            retry_after_s,
        )

    def decide(self, priority: Priority, states: Mapping[Priority, QueueState]) -> Admission:
        fill = fill_of(priority, states)
        threshold = self.thresholds[priority]
        admitted = fill < threshold
        return Admission(admitted, fill, threshold, 0 if admitted else self._wait(fill, threshold))

    def _wait(self, fill: float, threshold: float) -> int:
        over = max(0.0, fill - threshold) / max(1e-9, 1.0 - threshold + 1e-9)
        return max(1, math.ceil(self.retry_after_s * (1 + min(over, 4.0))))


def fill_of(priority: Priority, states: Mapping[Priority, QueueState]) -> float:
    own = states[priority]
    total_depth = sum(s.depth for s in states.values())
    total_capacity = sum(s.capacity for s in states.values())
    return max(own.depth / max(1, own.capacity), total_depth / max(1, total_capacity))


@dataclass
class Backoff:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**(attempt-1))]."""

    base_s: float
    cap_s: float
    rng: random.Random = field(default_factory=random.Random)

    def ceiling(self, attempt: int) -> float:
        return min(self.cap_s, self.base_s * 2.0 ** max(0, attempt - 1))

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Delay before the next attempt after ``attempt`` failed; never under Retry-After."""
        jittered = float(self.rng.uniform(0, self.ceiling(attempt)))
        return max(jittered, retry_after_s or 0.0)


class SlotScheduler:
    """Shares free slots among HIGH/NORMAL/LOW by weight (smooth weighted round-robin).

    A priority that has had work waiting for ``ageing_s`` without being served gets a
    slot before any weighted share, so LOW progresses under sustained HIGH load.
    """

    def __init__(
        self,
        weights: Mapping[Priority, int],
        ageing_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._weights = {p: weights[p] for p in SHARED}
        self._ageing_s = ageing_s
        self._clock = clock
        self._current = dict.fromkeys(SHARED, 0)
        self._last_served = dict.fromkeys(SHARED, clock())

    def plan(self, free: int, candidates: Iterable[Priority]) -> dict[Priority, int]:
        """How many of ``free`` slots to offer each candidate priority."""
        pool = [p for p in SHARED if p in set(candidates)]
        counts = dict.fromkeys(pool, 0)
        for priority in self._overdue(pool)[:free]:
            counts[priority] += 1
        for _ in range(free - sum(counts.values())):
            counts[self._next_weighted(pool)] += 1
        return {p: n for p, n in counts.items() if n}

    def served(self, priority: Priority, count: int) -> None:
        """Record that ``priority`` got ``count`` slots (0 with an empty queue: not waiting)."""
        if priority in self._last_served:
            self._last_served[priority] = self._clock()

    def _overdue(self, pool: list[Priority]) -> list[Priority]:
        now = self._clock()
        waiting = [p for p in pool if now - self._last_served[p] >= self._ageing_s]
        return sorted(waiting, key=lambda p: self._last_served[p])

    def _next_weighted(self, pool: list[Priority]) -> Priority:
        total = sum(self._weights[p] for p in pool)
        for p in pool:
            self._current[p] += self._weights[p]
        chosen = max(pool, key=lambda p: self._current[p])
        self._current[chosen] -= total
        return chosen
