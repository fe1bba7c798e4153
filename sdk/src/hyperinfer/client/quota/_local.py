"""The in-process limiter a fail-open team falls back to while Redis is unreachable.

GCRA in floating-point seconds on this process's monotonic clock, per limit, at the
configured rate divided by the number of live replicas (the last count seen in
Redis), so the whole fleet stays near the configured rate. Budgets cannot be
enforced without the shared store: a fail-open team's spend is not limited here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from hyperinfer.client.quota._index import Limits

_MAX_ENTRIES = 100_000


class LocalLimiter:
    """Per-limit theoretical arrival times, in seconds of ``clock``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}

    def acquire(self, limits: Limits, tokens: int, replicas: int) -> tuple[bool, float, str]:
        """``(allowed, retry_after_s, reason)``; takes from every limit or from none."""
        now = self._clock()
        share = max(1, replicas)
        plan: list[tuple[str, float]] = []
        worst, why = 0.0, ""
        for name, limit, units in self._limits(limits, tokens):
            local = limit / share
            if local <= 0 or units > local:
                return False, -1.0, name[:3]
            step = 60.0 / local
            start = max(self._tat.get(name, now), now)
            wait = start + units * step - now - local * step
            if wait > 1e-9:
                worst, why = max(worst, wait), why or name[:3]
            plan.append((name, start + units * step))
        if worst > 0:
            return False, worst, why
        if len(self._tat) > _MAX_ENTRIES:
            self._prune(now)
        self._tat.update(plan)
        return True, 0.0, ""

    def reset(self) -> None:
        self._tat.clear()

    @staticmethod
    def _limits(limits: Limits, tokens: int) -> list[tuple[str, int, int]]:
        found = []
        for prefix, pair, units in (("rpm", limits.rpm, 1), ("tpm", limits.tpm, tokens)):
            key_limit, team_limit = pair
            if key_limit is not None:
                found.append((f"{prefix}:k:{limits.team_id}:{limits.key_id}", key_limit, units))
            if team_limit is not None:
                found.append((f"{prefix}:t:{limits.team_id}", team_limit, units))
        return found

    def _prune(self, now: float) -> None:
        self._tat = {k: v for k, v in self._tat.items() if v > now}
