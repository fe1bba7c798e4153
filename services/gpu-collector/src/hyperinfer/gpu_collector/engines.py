"""Which backends to scrape, and how engine metrics become a ``BackendStateReported``.

Pure: no I/O. The convention (also in ``docs/routing.md``), read from the config snapshot:

- kind ``openai_compatible`` with tag ``engine:vllm`` → a vLLM server. ``base_url`` is its
  OpenAI root (``http://host:8000/v1``); metrics are read from ``<root>/metrics`` and
  liveness from ``<root>/health``, where ``<root>`` is ``base_url`` without ``/v1``.
- kind ``triton`` (or tag ``engine:triton``) → a Triton server. ``base_url`` is its HTTP
  endpoint (``http://host:8000``); metrics default to the same host on port 8002.
- tag ``metrics_url:<url>`` overrides where the metrics are read.
- tag ``node:<name>`` names the node the engine runs on: only the collector of that node
  scrapes it (engines with no node tag are scraped by every collector with
  ``scrape_untagged``), and the router scores it with that node's GPU metrics.
- tag ``scrape:off`` opts a backend out.

Latency, throughput, queue time and error rate are windowed: the change of the engine's
cumulative counters since the previous scrape (a counter that went down means the engine
restarted, and its value is taken as the change).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from hyperinfer.contracts.backend.v1 import BackendStateReported
from hyperinfer.contracts.config.v1 import BackendConfig, ConfigSnapshot

Engine = Literal["vllm", "triton"]
Samples = dict[str, list[tuple[dict[str, str], float]]]

TRITON_METRICS_PORT = 8002


@dataclass(frozen=True)
class ScrapeTarget:
    backend_id: str
    engine: Engine
    base_url: str
    metrics_url: str
    models: tuple[str, ...] = ()
    node: str | None = None


@dataclass(frozen=True)
class Counters:
    """Cumulative counters of one scrape, stamped with a monotonic time."""

    at: float
    values: dict[str, float] = field(default_factory=dict)


def tag_value(tags: list[str], key: str) -> str | None:
    """The value of the first ``key:<value>`` tag, or None."""
    prefix = key + ":"
    for tag in tags:
        if tag.startswith(prefix):
            return tag[len(prefix) :].strip() or None
    return None


def engine_of(backend: BackendConfig) -> Engine | None:
    tagged = tag_value(backend.tags, "engine")
    if tagged in ("vllm", "triton") and backend.kind in ("openai_compatible", "triton"):
        return tagged  # type: ignore[return-value]
    return "triton" if backend.kind == "triton" else None


def scrape_targets(
    snapshot: ConfigSnapshot, node: str, scrape_untagged: bool
) -> list[ScrapeTarget]:
    """The engines this node's collector scrapes, by the convention above."""
    targets = []
    for backend in snapshot.backends.values():
        target = scrape_target(backend)
        if target is None or "scrape:off" in backend.tags:
            continue
        if target.node == node or (target.node is None and scrape_untagged):
            targets.append(target)
    return sorted(targets, key=lambda t: t.backend_id)


def scrape_target(backend: BackendConfig) -> ScrapeTarget | None:
    engine = engine_of(backend)
    if engine is None or not backend.base_url.startswith(("http://", "https://")):
        return None
    root = engine_root(backend.base_url)
    metrics = tag_value(backend.tags, "metrics_url") or default_metrics_url(engine, root)
    return ScrapeTarget(
        backend_id=backend.id,
        engine=engine,
        base_url=root,
        metrics_url=metrics,
        models=tuple(backend.models),
        node=tag_value(backend.tags, "node"),
    )


def engine_root(base_url: str) -> str:
    """``http://h:8000/v1/`` → ``http://h:8000``: where an engine's own routes live."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def default_metrics_url(engine: Engine, root: str) -> str:
    if engine == "vllm":
        return root + "/metrics"
    parts = urlsplit(root)
    host = parts.hostname or "127.0.0.1"
    netloc = f"[{host}]" if ":" in host else host
    return urlunsplit((parts.scheme, f"{netloc}:{TRITON_METRICS_PORT}", "/metrics", "", ""))


# --- Prometheus text format --------------------------------------------------------
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def parse_prometheus_text(text: str) -> Samples:
    """Samples by their exposed name; ``ValueError`` names the first bad line."""
    samples: Samples = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise ValueError(f"metrics line {number} is not a sample: {line[:80]!r}")
        name, labels, value = match.groups()
        try:
            number_value = float(value)
        except ValueError:
            raise ValueError(f"metrics line {number} has no number: {line[:80]!r}") from None
        samples.setdefault(name, []).append((_labels(labels or "", number), number_value))
    return samples


def _labels(raw: str, line: int) -> dict[str, str]:
    labels: dict[str, str] = {}
    position = 0
    while position < len(raw.rstrip(", ")):
        match = _LABEL.match(raw, position)
        if match is None:
            raise ValueError(f"metrics line {line} has malformed labels")
        labels[match.group(1)] = match.group(2).replace('\\"', '"').replace("\\\\", "\\")
        position = match.end()
    return labels


def total(samples: Samples, *names: str) -> float | None:
    """The sum of every finite sample under the first of ``names`` that is present."""
    for name in names:
        values = [v for _, v in samples.get(name, []) if math.isfinite(v)]
        if name in samples:
            return sum(values)
    return None


def peak(samples: Samples, *names: str) -> float | None:
    """The largest finite sample under the first of ``names`` that is present."""
    for name in names:
        values = [v for _, v in samples.get(name, []) if math.isfinite(v)]
        if values:
            return max(values)
    return None


def label_values(samples: Samples, name: str, label: str) -> list[str]:
    return sorted({labels[label] for labels, _ in samples.get(name, []) if label in labels})


def counter(samples: Samples, name: str) -> float | None:
    """A counter by its name with or without the ``_total`` suffix."""
    return total(samples, name, name + "_total")


def increase(current: Counters, previous: Counters | None, name: str) -> float | None:
    """How much counter ``name`` grew since ``previous`` (a reset counts from zero)."""
    if previous is None or name not in current.values or name not in previous.values:
        return None
    now, before = current.values[name], previous.values[name]
    return now if now < before else now - before


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


# --- vLLM --------------------------------------------------------------------------
VLLM_COUNTERS = {
    "success": "vllm:request_success_total",
    "latency_sum": "vllm:e2e_request_latency_seconds_sum",
    "latency_count": "vllm:e2e_request_latency_seconds_count",
    "generation_tokens": "vllm:generation_tokens_total",
}


def vllm_state(
    target: ScrapeTarget,
    samples: Samples,
    health_status: int | None,
    previous: Counters | None,
    now: float,
    reporter: ReportContext,
) -> tuple[BackendStateReported, Counters]:
    """A vLLM scrape as a state report, plus the counters to diff against next time."""
    counters = Counters(now, _present({k: total(samples, n) for k, n in VLLM_COUNTERS.items()}))
    elapsed = now - previous.at if previous is not None else 0.0
    finished = increase(counters, previous, "latency_count")
    latency_s = ratio(increase(counters, previous, "latency_sum"), finished)
    tokens = increase(counters, previous, "generation_tokens")
    health_failed = health_status is not None and health_status >= 500
    state = reporter.state(
        target,
        healthy=not health_failed,
        detail=f"/health answered {health_status}" if health_failed else None,
        ready_models=label_values(samples, "vllm:num_requests_running", "model_name"),
        running_requests=total(samples, "vllm:num_requests_running"),
        waiting_requests=total(samples, "vllm:num_requests_waiting"),
        kv_cache_usage=_fraction(
            peak(samples, "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
        ),
        requests_success_total=counters.values.get("success"),
        latency_ms_avg=latency_s * 1000 if latency_s is not None else None,
        throughput_tokens_per_s=tokens / elapsed if tokens is not None and elapsed > 0 else None,
        requests_per_s=finished / elapsed if finished is not None and elapsed > 0 else None,
    )
    return state, counters


# --- Triton ------------------------------------------------------------------------
TRITON_COUNTERS = {
    "success": "nv_inference_request_success",
    "failure": "nv_inference_request_failure",
    "request_duration_us": "nv_inference_request_duration_us",
    "queue_duration_us": "nv_inference_queue_duration_us",
    "inference_count": "nv_inference_count",
}


def triton_state(
    target: ScrapeTarget,
    live: bool,
    ready: bool,
    model_ready: dict[str, bool],
    samples: Samples | None,
    previous: Counters | None,
    now: float,
    reporter: ReportContext,
    metrics_error: str | None = None,
) -> tuple[BackendStateReported, Counters | None]:
    """Triton health, model readiness and metrics as a state report."""
    not_ready = sorted(m for m, ok in model_ready.items() if not ok)
    problems = _triton_problems(live, ready, not_ready, model_ready, metrics_error)
    common = {
        "healthy": live and ready and (not model_ready or len(not_ready) < len(model_ready)),
        "detail": "; ".join(problems) or None,
        "ready_models": sorted(m for m, ok in model_ready.items() if ok),
        "not_ready_models": not_ready,
    }
    if samples is None:
        return reporter.state(target, **common), None
    counters = Counters(now, _present({k: counter(samples, n) for k, n in TRITON_COUNTERS.items()}))
    state = reporter.state(
        target,
        **common,
        pending_requests=total(samples, "nv_inference_pending_request_count"),
        queue_time_us_total=counters.values.get("queue_duration_us"),
        inference_count_total=counters.values.get("inference_count"),
        requests_success_total=counters.values.get("success"),
        **_triton_windowed(counters, previous, now),
    )
    return state, counters


def _triton_problems(
    live: bool,
    ready: bool,
    not_ready: list[str],
    model_ready: dict[str, bool],
    metrics_error: str | None,
) -> list[str]:
    problems = []
    if not live:
        problems.append("server not live")
    elif not ready:
        problems.append("server not ready")
    if not_ready:
        every = " (all configured models)" if len(not_ready) == len(model_ready) else ""
        problems.append(f"models not ready{every}: {', '.join(not_ready)}")
    if metrics_error:
        problems.append(f"metrics: {metrics_error}")
    return problems


def _triton_windowed(
    counters: Counters, previous: Counters | None, now: float
) -> dict[str, float | None]:
    succeeded = increase(counters, previous, "success")
    failed = increase(counters, previous, "failure")
    finished = (succeeded or 0.0) + (failed or 0.0) if succeeded is not None else None
    elapsed = now - previous.at if previous is not None else 0.0
    duration_us = ratio(increase(counters, previous, "request_duration_us"), succeeded)
    queue_us = ratio(increase(counters, previous, "queue_duration_us"), succeeded)
    return {
        "latency_ms_avg": duration_us / 1000 if duration_us is not None else None,
        "queue_time_ms_avg": queue_us / 1000 if queue_us is not None else None,
        "error_rate": ratio(failed, finished) if failed is not None else None,
        "requests_per_s": finished / elapsed if finished is not None and elapsed > 0 else None,
    }


# --- shared ------------------------------------------------------------------------
@dataclass(frozen=True)
class ReportContext:
    """Who reports and when: the same for every state of one scrape round."""

    node: str
    observed_at: datetime
    interval_s: float

    def state(self, target: ScrapeTarget, **fields: object) -> BackendStateReported:
        return BackendStateReported.model_validate(
            {
                "backend_id": target.backend_id,
                "engine": target.engine,
                "node": target.node or self.node,
                "observed_at": self.observed_at,
                "interval_s": self.interval_s,
                **fields,
            }
        )

    def unreachable(self, target: ScrapeTarget, reason: str) -> BackendStateReported:
        return self.state(target, healthy=False, detail=reason[:500])


def _fraction(value: float | None) -> float | None:
    return None if value is None else min(max(value, 0.0), 1.0)


def _present(values: dict[str, float | None]) -> dict[str, float]:
    return {k: v for k, v in values.items() if v is not None}
