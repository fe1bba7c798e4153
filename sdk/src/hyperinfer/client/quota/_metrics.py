"""What the quota limiter counts, as plain numbers a service exports.

The client library imports no metrics framework: the limiter updates a
``QuotaMetrics`` object (dict increments, a few hundred nanoseconds per request)
and a service or the ingress turns it into Prometheus families when scraped.
Policy switches also reach listeners registered with ``on_switch`` (a service
publishes ``quota.v1.QuotaPolicySwitched`` from there).
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

log = logging.getLogger("hyperinfer.client.quota")

Mode = Literal["redis", "fail_open_local", "fail_closed"]
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
ERROR_BUCKETS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0)


@dataclass
class Histogram:
    """Cumulative-on-export bucket counts, like a Prometheus histogram."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, count), ...]`` ending with ``+Inf``."""
        out, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


@dataclass(frozen=True)
class PolicySwitch:
    """A node changed how it decides for a team (``team_id`` None: the whole node)."""

    node: str
    mode: Mode
    team_id: str | None
    reason: str


SwitchListener = Callable[[PolicySwitch], None]


@dataclass
class QuotaMetrics:
    """Counters, gauges and histograms of one node's quota decisions."""

    checks: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("allowed", "denied", "unavailable", "local_allowed", "local_denied"), 0
        )
    )
    denials: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("rpm", "tpm", "budget", "redis_unavailable"), 0)
    )
    switches: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("redis", "fail_open_local", "fail_closed"), 0)
    )
    redis_errors: int = 0
    redis_latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    token_error: Histogram = field(default_factory=lambda: Histogram(ERROR_BUCKETS))
    cost_error: Histogram = field(default_factory=lambda: Histogram(ERROR_BUCKETS))
    settles: int = 0
    redis_up: bool = True
    live_replicas: int = 1
    _listeners: list[SwitchListener] = field(default_factory=list)

    def on_switch(self, listener: SwitchListener) -> None:
        """Call ``listener(switch)`` after every policy switch (keep it quick, never raise)."""
        self._listeners.append(listener)

    def switched(self, switch: PolicySwitch) -> None:
        self.switches[switch.mode] += 1
        scope = f"team {switch.team_id}" if switch.team_id else "node"
        level = logging.INFO if switch.mode == "redis" else logging.WARNING
        log.log(
            level,
            "quota policy switch on node %s: %s -> %s (%s)",
            switch.node,
            scope,
            switch.mode,
            switch.reason,
        )
        for listener in self._listeners:
            try:
                listener(switch)
            except Exception:
                log.exception("quota switch listener failed")

    def settled(self, reserved_tokens: int, actual_tokens: int, reserved: int, actual: int) -> None:
        """Record how far a reservation was from what the request used (relative error)."""
        self.settles += 1
        self.token_error.observe(abs(reserved_tokens - actual_tokens) / max(reserved_tokens, 1))
        self.cost_error.observe(abs(reserved - actual) / max(reserved, 1))
