"""What the router knows: the latest report per backend and GPU node, and telemetry rollups.

In memory, no I/O; every method takes ``now`` (monotonic seconds), so staleness is
measured from when a report arrived here, never from a remote clock. ``view`` turns it
into the ``CandidateView`` the domain scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from hyperinfer.contracts.backend.v1 import BackendStateReported
from hyperinfer.contracts.config.v1 import BackendConfig
from hyperinfer.contracts.gpu.v1 import GpuMetricsReported, GpuSample
from hyperinfer.contracts.usage.v1 import UsageRollup
from hyperinfer.router.domain import (
    CandidateView,
    Freshness,
    HealthRecord,
    Inputs,
    ewma,
    observe_health,
)


@dataclass(frozen=True)
class Tuning:
    """Staleness, recovery and smoothing; the router's settings fill it."""

    backend_stale_after_s: float = 10.0
    gpu_stale_after_s: float = 15.0
    stale_after_intervals: float = 3.0
    recover_after: int = 2
    history_tau_s: float = 30.0
    latency_tau_s: float = 5.0
    rollup_horizon_s: float = 180.0
    rollup_min_requests: int = 5


@dataclass
class BackendRecord:
    state: BackendStateReported
    received_at: float
    health: HealthRecord
    latency_ms: float | None = None
    latency_at: float | None = None


@dataclass
class NodeRecord:
    report: GpuMetricsReported
    received_at: float


@dataclass
class Telemetry:
    """Rollups of one backend, keyed so a re-published window replaces the old one."""

    rollups: dict[tuple[datetime, str, str, str], tuple[UsageRollup, float]] = field(
        default_factory=dict
    )

    def totals(self) -> tuple[int, int, float | None]:
        """(requests, errors, request-weighted p50 latency)."""
        requests = sum(r.requests for r, _ in self.rollups.values())
        errors = sum(r.errors for r, _ in self.rollups.values())
        timed = [
            (r.latency_ms_p50, r.requests)
            for r, _ in self.rollups.values()
            if r.latency_ms_p50 is not None and r.requests > 0
        ]
        weight = sum(n for _, n in timed)
        latency = sum(p * n for p, n in timed) / weight if weight else None
        return requests, errors, latency


class RouterState:
    def __init__(self, tuning: Tuning | None = None) -> None:
        self.tuning = tuning or Tuning()
        self.backends: dict[str, BackendRecord] = {}
        self.nodes: dict[str, NodeRecord] = {}
        self.telemetry: dict[str, Telemetry] = {}

    # --- applying reports ---
    def record_backend(self, state: BackendStateReported, now: float) -> bool:
        """Keep ``state``; True when the backend's ejection changed (worth a recompute now)."""
        record = self.backends.get(state.backend_id)
        if record is not None and state.observed_at < record.state.observed_at:
            return False  # out of order: an older scrape arrived late
        t = self.tuning
        previous = record.health if record else None
        health = observe_health(
            previous, state.healthy, state.detail, now, t.recover_after, t.history_tau_s
        )
        if record is None:
            record = BackendRecord(state, now, health)
            self.backends[state.backend_id] = record
        record.state, record.received_at, record.health = state, now, health
        if state.healthy and state.latency_ms_avg is not None:
            elapsed = now - record.latency_at if record.latency_at is not None else 0.0
            record.latency_ms = ewma(
                record.latency_ms, state.latency_ms_avg, elapsed, t.latency_tau_s
            )
            record.latency_at = now
        return previous is None or previous.ejected != health.ejected

    def record_gpu(self, report: GpuMetricsReported, now: float) -> None:
        record = self.nodes.get(report.node)
        if record is not None and report.collected_at < record.report.collected_at:
            return
        self.nodes[report.node] = NodeRecord(report, now)

    def record_rollup(self, rollup: UsageRollup, now: float) -> None:
        if rollup.window != "minute":
            return
        book = self.telemetry.setdefault(rollup.backend_id, Telemetry())
        key = (rollup.window_start, rollup.team_id, rollup.key_id, rollup.model)
        book.rollups[key] = (rollup, now)

    def prune(self, now: float) -> None:
        """Forget rollups older than the horizon."""
        horizon = self.tuning.rollup_horizon_s
        for book in self.telemetry.values():
            for key in [k for k, (_, at) in book.rollups.items() if now - at > horizon]:
                del book.rollups[key]

    # --- reading ---
    def freshness(self, backend_id: str, now: float) -> tuple[Freshness, float | None]:
        record = self.backends.get(backend_id)
        if record is None:
            return "unmonitored", None
        age = now - record.received_at
        limit = _limit(self.tuning.backend_stale_after_s, record.state.interval_s, self.tuning)
        return ("fresh" if age <= limit else "stale"), age

    def view(
        self, backend: BackendConfig | None, backend_id: str, model: str, now: float
    ) -> CandidateView:
        if backend is None:
            return CandidateView(backend_id, model, known=False)
        freshness, age = self.freshness(backend_id, now)
        record = self.backends.get(backend_id)
        inputs, sources = self._inputs(backend, record if freshness == "fresh" else None, now)
        return CandidateView(
            backend_id=backend_id,
            model=model,
            static_weight=backend.weight,
            freshness=freshness,
            state_age_s=round(age, 3) if age is not None else None,
            ejected_reason=self._ejection(record, model, freshness),
            inputs=inputs,
            sources=sources,
        )

    @staticmethod
    def _ejection(record: BackendRecord | None, model: str, freshness: Freshness) -> str | None:
        if record is None:
            return None
        if record.health.ejected:
            return record.health.reason
        if freshness == "fresh" and model in record.state.not_ready_models:
            return f"model {model} not ready on the engine"
        return None

    def _inputs(
        self, backend: BackendConfig, fresh: BackendRecord | None, now: float
    ) -> tuple[Inputs, dict[str, str]]:
        sources: dict[str, str] = {}
        requests, errors, rollup_latency = self._telemetry(backend.id)
        gpu_util, gpu_free, gpu_source = self._gpu(backend, now)
        if gpu_source:
            sources["gpu_utilization"] = sources["gpu_memory"] = gpu_source
        state = fresh.state if fresh else None
        queue = _queue(state)
        latency = fresh.latency_ms if fresh else None
        error_rate = state.error_rate if state else None
        for name, value in (("queue", queue), ("kv_cache", state and state.kv_cache_usage)):
            if value is not None:
                sources[name] = "engine"
        if latency is not None:
            sources["latency"] = "engine (EWMA)"
        elif rollup_latency is not None:
            latency, sources["latency"] = rollup_latency, "telemetry p50"
        if error_rate is not None:
            sources["error_rate"] = "engine"
        elif requests >= self.tuning.rollup_min_requests:
            error_rate, sources["error_rate"] = (
                errors / requests,
                f"telemetry ({requests} requests)",
            )
        record = self.backends.get(backend.id)
        inputs = Inputs(
            gpu_utilization=gpu_util,
            gpu_memory_free=gpu_free,
            queue=queue,
            running=state.running_requests if state else None,
            kv_cache=state.kv_cache_usage if state else None,
            latency_ms=latency,
            error_rate=error_rate,
            availability=record.health.availability if record else None,
        )
        return inputs, sources

    def _telemetry(self, backend_id: str) -> tuple[int, int, float | None]:
        book = self.telemetry.get(backend_id)
        return book.totals() if book else (0, 0, None)

    def _gpu(
        self, backend: BackendConfig, now: float
    ) -> tuple[float | None, float | None, str | None]:
        node = _tag(backend.tags, "node")
        record = self.nodes.get(node) if node else None
        if record is None or record.report.status == "no_gpu":
            return None, None, None
        limit = _limit(self.tuning.gpu_stale_after_s, record.report.interval_s, self.tuning)
        if now - record.received_at > limit:
            return None, None, None
        gpus = _gpus_of(record.report.gpus, [t[4:] for t in backend.tags if t.startswith("gpu:")])
        util = [g.utilization_gpu_pct / 100 for g in gpus if g.utilization_gpu_pct is not None]
        free = [
            g.memory_free_bytes / g.memory_total_bytes
            for g in gpus
            if g.memory_free_bytes is not None and g.memory_total_bytes
        ]
        if not util and not free:
            return None, None, None
        return (max(util) if util else None), (min(free) if free else None), f"gpu:{node}"


def _limit(base_s: float, interval_s: float | None, tuning: Tuning) -> float:
    return max(base_s, tuning.stale_after_intervals * (interval_s or 0.0))


def _queue(state: BackendStateReported | None) -> float | None:
    if state is None or (state.waiting_requests is None and state.pending_requests is None):
        return None
    return (state.waiting_requests or 0.0) + (state.pending_requests or 0.0)


def _tag(tags: list[str], key: str) -> str | None:
    prefix = key + ":"
    return next((t[len(prefix) :] for t in tags if t.startswith(prefix)), None)


def _gpus_of(gpus: list[GpuSample], wanted: list[str]) -> list[GpuSample]:
    if not wanted:
        return gpus
    return [g for g in gpus if str(g.index) in wanted or (g.uuid is not None and g.uuid in wanted)]
