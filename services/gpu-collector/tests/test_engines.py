"""Engine convention and metrics → BackendStateReported, without the network."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hyperinfer.contracts.config.v1 import BackendConfig, ConfigSnapshot
from hyperinfer.gpu_collector.engines import (
    ReportContext,
    ScrapeTarget,
    parse_prometheus_text,
    scrape_target,
    scrape_targets,
    triton_state,
    vllm_state,
)
from hyperinfer.gpu_collector.testing.fake_engines import FakeTriton, FakeVllm

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CTX = ReportContext(node="node-a", observed_at=NOW, interval_s=2.0)
VLLM = ScrapeTarget("b1", "vllm", "http://h:8000", "http://h:8000/metrics", ("m",))
TRITON = ScrapeTarget("t1", "triton", "http://h:8000", "http://h:8002/metrics", ("a", "b"))


def backend(
    id_: str, kind: str = "openai_compatible", tags: list[str] | None = None, **kw: object
) -> BackendConfig:
    return BackendConfig.model_validate(
        {
            "id": id_,
            "name": id_,
            "kind": kind,
            "base_url": "http://h:8000/v1",
            "tags": tags or [],
            **kw,
        }
    )


def snapshot(*backends: BackendConfig) -> ConfigSnapshot:
    return ConfigSnapshot(version=1, generated_at=NOW, backends={b.id: b for b in backends})


# --- convention --------------------------------------------------------------------
def test_vllm_is_an_openai_compatible_backend_tagged_engine_vllm() -> None:
    target = scrape_target(backend("b1", tags=["engine:vllm"], models=["m"]))
    assert target == ScrapeTarget("b1", "vllm", "http://h:8000", "http://h:8000/metrics", ("m",))


def test_triton_kind_defaults_metrics_to_port_8002() -> None:
    target = scrape_target(backend("t1", kind="triton", base_url="http://10.0.0.5:8000"))
    assert target is not None
    assert (target.engine, target.base_url, target.metrics_url) == (
        "triton",
        "http://10.0.0.5:8000",
        "http://10.0.0.5:8002/metrics",
    )


def test_metrics_url_and_node_tags() -> None:
    tags = ["engine:vllm", "metrics_url:http://h:9100/metrics", "node:gpu-1"]
    target = scrape_target(backend("b1", tags=tags))
    assert target is not None
    assert (target.metrics_url, target.node) == ("http://h:9100/metrics", "gpu-1")


@pytest.mark.parametrize(
    "config",
    [
        backend("x", kind="openai"),  # a provider, not an engine we host
        backend("x"),  # openai_compatible without an engine tag
        backend("x", tags=["engine:tgi"]),  # an engine we do not scrape
        backend("x", kind="triton", base_url=""),  # no address
    ],
)
def test_not_scraped(config: BackendConfig) -> None:
    assert scrape_target(config) is None


def test_targets_of_a_node_respect_node_tags_scrape_off_and_untagged() -> None:
    snap = snapshot(
        backend("mine", tags=["engine:vllm", "node:a"]),
        backend("theirs", tags=["engine:vllm", "node:b"]),
        backend("anyone", tags=["engine:vllm"]),
        backend("off", tags=["engine:vllm", "scrape:off"]),
    )
    assert [t.backend_id for t in scrape_targets(snap, "a", True)] == ["anyone", "mine"]
    assert [t.backend_id for t in scrape_targets(snap, "a", False)] == ["mine"]


# --- Prometheus text ---------------------------------------------------------------
def test_parse_labels_escapes_and_special_values() -> None:
    text = (
        "# HELP x y\n# TYPE a gauge\n"
        'a{model_name="m",path="C:\\\\x",q="say \\"hi\\""} 1.5\n'
        "b 2 1700000000000\n"
        'c{le="+Inf"} +Inf\n'
        "d{} NaN\n"
    )
    samples = parse_prometheus_text(text)
    assert samples["a"] == [({"model_name": "m", "path": "C:\\x", "q": 'say "hi"'}, 1.5)]
    assert samples["b"] == [({}, 2.0)]
    assert samples["c"][0][1] == float("inf")
    assert "d" in samples


@pytest.mark.parametrize("text", ["not a metric line at all", 'a{x="1" 2', "a{x=1} 2", "a b"])
def test_bad_metrics_text_names_the_line(text: str) -> None:
    with pytest.raises(ValueError, match="metrics line 1"):
        parse_prometheus_text(text)


# --- vLLM --------------------------------------------------------------------------
def test_vllm_gauges_and_windowed_rates_from_the_fake_engines_text() -> None:
    engine = FakeVllm("m", slots=4)
    engine.running, engine.waiting, engine.extra_waiting = 2, 3, 1
    first, counters = vllm_state(
        VLLM, parse_prometheus_text(engine.metrics_text()), 200, None, 10.0, CTX
    )
    assert first.healthy is True
    assert (first.running_requests, first.waiting_requests, first.kv_cache_usage) == (2, 4, 0.5)
    assert first.latency_ms_avg is None  # no window yet
    assert first.ready_models == ["m"]
    assert (first.node, first.interval_s, first.engine) == ("node-a", 2.0, "vllm")

    for seconds in (0.1, 0.3):
        engine.latency.observe(seconds)
    engine.served += 2
    engine.generation_tokens += 40
    second, _ = vllm_state(
        VLLM, parse_prometheus_text(engine.metrics_text()), 200, counters, 12.0, CTX
    )
    assert second.latency_ms_avg == pytest.approx(200.0)
    assert second.throughput_tokens_per_s == pytest.approx(20.0)
    assert second.requests_per_s == pytest.approx(1.0)
    assert second.requests_success_total == 2


def test_vllm_old_cache_metric_name_and_restart() -> None:
    def text(total_s: float, count: int) -> str:
        return (
            "vllm:gpu_cache_usage_perc 0.7\n"
            f"vllm:e2e_request_latency_seconds_sum {total_s}\n"
            f"vllm:e2e_request_latency_seconds_count {count}\n"
        )

    _, before = vllm_state(VLLM, parse_prometheus_text(text(100, 50)), None, None, 1.0, CTX)
    restarted = text(1, 2)
    state, _ = vllm_state(VLLM, parse_prometheus_text(restarted), None, before, 2.0, CTX)
    assert state.kv_cache_usage == 0.7
    assert state.latency_ms_avg == pytest.approx(500.0)  # counters restarted: 1 s / 2


def test_vllm_health_5xx_is_unhealthy_404_is_not() -> None:
    samples = parse_prometheus_text("vllm:num_requests_running 0\n")
    down, _ = vllm_state(VLLM, samples, 503, None, 1.0, CTX)
    assert (down.healthy, down.detail) == (False, "/health answered 503")
    no_route, _ = vllm_state(VLLM, samples, 404, None, 1.0, CTX)
    assert no_route.healthy is True


# --- Triton ------------------------------------------------------------------------
def test_triton_pending_queue_time_error_rate_and_latency() -> None:
    engine = FakeTriton(["a", "b"])
    engine.pending = 5
    engine.record(ok=10, duration_ms=20.0, queue_ms=4.0)
    ready = {"a": True, "b": True}
    _, before = triton_state(
        TRITON, True, True, ready, parse_prometheus_text(engine.metrics_text()), None, 1.0, CTX
    )
    engine.record(ok=8, failed=2, duration_ms=30.0, queue_ms=6.0)
    samples = parse_prometheus_text(engine.metrics_text())
    state, _ = triton_state(TRITON, True, True, ready, samples, before, 3.0, CTX)
    assert state.healthy is True
    assert state.pending_requests == 5
    assert state.latency_ms_avg == pytest.approx(30.0)
    assert state.queue_time_ms_avg == pytest.approx(6.0)
    assert state.error_rate == pytest.approx(0.2)
    assert state.requests_per_s == pytest.approx(5.0)
    assert (state.inference_count_total, state.queue_time_us_total) == (18, 88_000)


def test_triton_some_models_not_ready_is_healthy_all_is_not() -> None:
    some, _ = triton_state(TRITON, True, True, {"a": True, "b": False}, None, None, 1.0, CTX)
    assert (some.healthy, some.not_ready_models, some.ready_models) == (True, ["b"], ["a"])
    assert some.detail == "models not ready: b"
    none, _ = triton_state(TRITON, True, True, {"a": False, "b": False}, None, None, 1.0, CTX)
    assert none.healthy is False
    assert none.detail is not None
    assert "all configured models" in none.detail


def test_triton_not_live_or_not_ready_is_unhealthy() -> None:
    dead, _ = triton_state(TRITON, False, False, {}, None, None, 1.0, CTX)
    assert (dead.healthy, dead.detail) == (False, "server not live")
    loading, _ = triton_state(TRITON, True, False, {}, None, None, 1.0, CTX)
    assert (loading.healthy, loading.detail) == (False, "server not ready")


def test_triton_metrics_failure_alone_keeps_it_healthy_and_says_why() -> None:
    state, counters = triton_state(
        TRITON, True, True, {"a": True}, None, None, 1.0, CTX, metrics_error="HTTP 403"
    )
    assert (state.healthy, state.detail, counters) == (True, "metrics: HTTP 403", None)
