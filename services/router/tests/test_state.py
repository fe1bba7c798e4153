"""RouterState: reports in, candidate views out (staleness, health, GPUs, telemetry)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hyperinfer.contracts.backend.v1 import BackendStateReported
from hyperinfer.contracts.config.v1 import BackendConfig
from hyperinfer.contracts.gpu.v1 import GpuMetricsReported, GpuSample
from hyperinfer.contracts.usage.v1 import UsageRollup
from hyperinfer.router.state import RouterState, Tuning

T0 = datetime(2026, 1, 2, tzinfo=UTC)
GIB = 1024**3


def report(backend: str = "a", at: float = 0.0, **fields: object) -> BackendStateReported:
    base: dict[str, object] = {"healthy": True, "interval_s": 1.0}
    return BackendStateReported.model_validate(
        {"backend_id": backend, "observed_at": T0 + timedelta(seconds=at), **base, **fields}
    )


def config(backend: str = "a", tags: list[str] | None = None, weight: float = 1.0) -> BackendConfig:
    return BackendConfig(
        id=backend, name=backend, kind="openai_compatible", tags=tags or [], weight=weight
    )


def test_unknown_and_unmonitored_backends() -> None:
    state = RouterState()
    assert state.view(None, "x", "m", 0.0).known is False
    view = state.view(config(), "a", "m", 0.0)
    assert (view.freshness, view.ejected_reason, view.inputs.queue) == ("unmonitored", None, None)


def test_fresh_report_feeds_queue_kv_and_running() -> None:
    state = RouterState()
    state.record_backend(
        report(waiting_requests=3, pending_requests=1, running_requests=2, kv_cache_usage=0.4),
        100.0,
    )
    view = state.view(config(), "a", "m", 100.5)
    assert view.freshness == "fresh"
    assert (view.inputs.queue, view.inputs.running, view.inputs.kv_cache) == (4, 2, 0.4)
    assert view.sources["queue"] == "engine"
    assert view.inputs.availability == 1.0


def test_staleness_uses_the_larger_of_setting_and_three_intervals() -> None:
    state = RouterState(Tuning(backend_stale_after_s=2.0))
    state.record_backend(report(interval_s=5.0), 0.0)
    assert state.freshness("a", 14.9)[0] == "fresh"
    assert state.freshness("a", 15.1)[0] == "stale"
    view = state.view(config(), "a", "m", 20.0)
    assert view.freshness == "stale"
    assert view.state_age_s == 20.0
    assert view.inputs.queue is None  # stale engine data is not used for scores


def test_unhealthy_ejects_and_recovery_needs_consecutive_healthy_reports() -> None:
    state = RouterState(Tuning(recover_after=2))
    assert state.record_backend(report(at=0), 0.0) is True  # first sight counts as a change
    assert state.record_backend(report(at=1, healthy=False, detail="refused"), 1.0) is True
    assert state.view(config(), "a", "m", 1.0).ejected_reason == "unhealthy: refused"
    assert state.record_backend(report(at=2), 2.0) is False
    assert state.view(config(), "a", "m", 2.0).ejected_reason == "recovering: 1/2 healthy reports"
    assert state.record_backend(report(at=3), 3.0) is True
    assert state.view(config(), "a", "m", 3.0).ejected_reason is None


def test_out_of_order_reports_are_ignored() -> None:
    state = RouterState()
    state.record_backend(report(at=5, waiting_requests=1), 5.0)
    assert state.record_backend(report(at=4, healthy=False), 5.1) is False
    assert state.view(config(), "a", "m", 5.2).ejected_reason is None


def test_model_not_ready_ejects_only_that_model() -> None:
    state = RouterState()
    state.record_backend(report(not_ready_models=["big"]), 0.0)
    assert (
        state.view(config(), "a", "big", 0.1).ejected_reason == "model big not ready on the engine"
    )
    assert state.view(config(), "a", "small", 0.1).ejected_reason is None


def test_latency_is_smoothed_over_time() -> None:
    state = RouterState(Tuning(latency_tau_s=5.0))
    state.record_backend(report(at=0, latency_ms_avg=100.0), 0.0)
    state.record_backend(report(at=1, latency_ms_avg=1100.0), 1.0)
    latency = state.view(config(), "a", "m", 1.0).inputs.latency_ms
    assert latency is not None
    assert 100 < latency < 400  # one second of a 5 s time constant: ~18% of the jump


def gpu_report(node: str = "n1", at: float = 0.0, status: str = "ok") -> GpuMetricsReported:
    gpus = [
        GpuSample(
            index=0,
            uuid="GPU-0",
            utilization_gpu_pct=20,
            memory_total_bytes=80 * GIB,
            memory_free_bytes=60 * GIB,
        ),
        GpuSample(
            index=1,
            uuid="GPU-1",
            utilization_gpu_pct=90,
            memory_total_bytes=80 * GIB,
            memory_free_bytes=8 * GIB,
        ),
    ]
    return GpuMetricsReported.model_validate(
        {
            "node": node,
            "collected_at": T0 + timedelta(seconds=at),
            "status": status,
            "gpus": gpus if status == "ok" else [],
            "interval_s": 1.0,
        }
    )


def test_gpu_inputs_follow_node_and_gpu_tags() -> None:
    state = RouterState()
    state.record_gpu(gpu_report(), 0.0)
    whole = state.view(config(tags=["node:n1"]), "a", "m", 0.5).inputs
    assert (whole.gpu_utilization, whole.gpu_memory_free) == (0.9, 0.1)
    first = state.view(config(tags=["node:n1", "gpu:0"]), "a", "m", 0.5)
    assert (first.inputs.gpu_utilization, first.inputs.gpu_memory_free) == (0.2, 0.75)
    assert first.sources["gpu_utilization"] == "gpu:n1"
    by_uuid = state.view(config(tags=["node:n1", "gpu:GPU-1"]), "a", "m", 0.5).inputs
    assert by_uuid.gpu_utilization == 0.9
    untagged = state.view(config(), "a", "m", 0.5).inputs
    assert untagged.gpu_utilization is None


def test_stale_or_gpu_less_nodes_give_no_gpu_inputs() -> None:
    state = RouterState(Tuning(gpu_stale_after_s=5.0))
    state.record_gpu(gpu_report(), 0.0)
    assert state.view(config(tags=["node:n1"]), "a", "m", 6.0).inputs.gpu_utilization is None
    state.record_gpu(gpu_report(at=7, status="no_gpu"), 7.0)
    assert state.view(config(tags=["node:n1"]), "a", "m", 7.1).inputs.gpu_utilization is None


def rollup(
    backend: str = "a",
    minute: int = 0,
    requests: int = 10,
    errors: int = 0,
    p50: float | None = 200.0,
    team: str = "t1",
) -> UsageRollup:
    return UsageRollup(
        window_start=T0 + timedelta(minutes=minute),
        team_id=team,
        key_id="k",
        model="m",
        backend_id=backend,
        requests=requests,
        errors=errors,
        prompt_tokens=0,
        completion_tokens=0,
        cost_micros=0,
        latency_ms_p50=p50,
    )


def test_telemetry_error_rate_and_latency_for_backends_without_engine_state() -> None:
    state = RouterState(Tuning(rollup_min_requests=5, rollup_horizon_s=100))
    state.record_rollup(rollup(requests=10, errors=2, p50=100), 0.0)
    state.record_rollup(rollup(requests=30, errors=0, p50=300, team="t2"), 0.0)
    state.record_rollup(rollup(requests=10, errors=9, p50=100), 1.0)  # same window re-published
    view = state.view(config(), "a", "m", 2.0)
    assert view.inputs.error_rate == pytest.approx(9 / 40)
    assert view.inputs.latency_ms == pytest.approx((100 * 10 + 300 * 30) / 40)
    assert view.sources["latency"] == "telemetry p50"
    state.prune(200.0)
    assert state.view(config(), "a", "m", 200.0).inputs.error_rate is None


def test_too_few_requests_give_no_error_rate() -> None:
    state = RouterState(Tuning(rollup_min_requests=5))
    state.record_rollup(rollup(requests=2, errors=2), 0.0)
    assert state.view(config(), "a", "m", 0.0).inputs.error_rate is None


def test_engine_error_rate_wins_over_telemetry() -> None:
    state = RouterState()
    state.record_rollup(rollup(requests=100, errors=50), 0.0)
    state.record_backend(report(error_rate=0.01), 0.0)
    assert state.view(config(), "a", "m", 0.1).inputs.error_rate == 0.01
