"""Fake inference engines over real HTTP: what the collector scrapes, for tests and benches.

- ``FakeVllm``: an OpenAI-compatible ``/v1/chat/completions`` (non-streaming) with a
  capacity model — ``slots`` requests are served at once, each for ``service_time_s``;
  the rest wait in FIFO order — and vLLM's ``/metrics`` (``vllm:num_requests_running``,
  ``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc``,
  ``vllm:request_success_total``, ``vllm:e2e_request_latency_seconds`` histogram,
  ``vllm:generation_tokens_total``) and ``/health``. Knobs: ``extra_waiting`` /
  ``extra_running`` (load that did not come through us), ``healthy`` (``/health`` 503),
  ``slowdown`` (service time multiplier), ``background_slots`` (slots held by others).
- ``FakeTriton``: Triton's ``/v2/health/live``, ``/v2/health/ready``,
  ``/v2/models/<m>/ready`` and its ``nv_inference_*`` metrics on ``/metrics``.
- ``EngineServer``: serves either app on 127.0.0.1 inside the running event loop; it can
  be stopped (a dead backend: connections refused) and started again on the same port.

The data plane's protocol-faithful fake upstream lives in the client library; this one is
only as faithful as routing needs (its ``/metrics`` is the point).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, float("inf"))


@dataclass
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.buckets[i] += 1
        self.total += seconds
        self.count += 1


class FakeVllm:
    """A vLLM-like engine with ``slots`` parallel slots and a FIFO queue behind them."""

    def __init__(
        self,
        model: str = "fake-model",
        *,
        slots: int = 4,
        service_time_s: float = 0.05,
        jitter: float = 0.1,
        completion_tokens: int = 16,
        background_slots: int = 0,
        seed: int | None = None,
    ) -> None:
        if not 0 <= background_slots < slots:
            raise ValueError("background_slots must leave at least one slot free")
        self.model = model
        self.slots = slots
        self.service_time_s = service_time_s
        self.jitter = jitter
        self.completion_tokens = completion_tokens
        self.background_slots = background_slots
        self.extra_waiting = 0.0
        self.extra_running = 0.0
        self.healthy = True
        self.slowdown = 1.0
        self.running = 0
        self.waiting = 0
        self.served = 0
        self.generation_tokens = 0
        self.prompt_tokens = 0
        self.latency = _Histogram()
        self._gate: asyncio.Semaphore | None = None
        self._rng = random.Random(seed)

    def app(self) -> FastAPI:
        app = FastAPI()
        app.post("/v1/chat/completions")(self._chat)
        app.get("/v1/models")(self._models)
        app.get("/metrics")(self._metrics)
        app.get("/health")(self._health)
        return app

    async def _chat(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _openai_error(400, "request body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _openai_error(400, "messages must be a list")
        started = time.perf_counter()
        await self._serve_one()
        self.latency.observe(time.perf_counter() - started)
        prompt = sum(
            len(str(m.get("content", ""))) // 4 + 1 for m in body["messages"] if isinstance(m, dict)
        )
        self.prompt_tokens += prompt
        return JSONResponse(self._completion(str(body.get("model") or self.model), prompt))

    async def _serve_one(self) -> None:
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.slots - self.background_slots)
        self.waiting += 1
        try:
            await self._gate.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            spread = 1.0 + self.jitter * (2 * self._rng.random() - 1)
            await asyncio.sleep(max(0.0, self.service_time_s * self.slowdown * spread))
        finally:
            self.running -= 1
            self._gate.release()
        self.served += 1
        self.generation_tokens += self.completion_tokens

    def _completion(self, model: str, prompt: int) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok " * self.completion_tokens},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": self.completion_tokens,
                "total_tokens": prompt + self.completion_tokens,
            },
        }

    async def _models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.model, "object": "model"}]}

    async def _health(self) -> Response:
        return Response(status_code=200 if self.healthy else 503)

    async def _metrics(self) -> PlainTextResponse:
        return PlainTextResponse(self.metrics_text())

    def metrics_text(self) -> str:
        label = f'model_name="{self.model}"'
        running = self.running + self.background_slots + self.extra_running
        lines = [
            *_gauge("vllm:num_requests_running", label, running),
            *_gauge("vllm:num_requests_waiting", label, self.waiting + self.extra_waiting),
            *_gauge("vllm:kv_cache_usage_perc", label, min(1.0, running / self.slots)),
            "# TYPE vllm:request_success_total counter",
            f'vllm:request_success_total{{finished_reason="stop",{label}}} {float(self.served)}',
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{{{label}}} {float(self.generation_tokens)}",
            "# TYPE vllm:prompt_tokens_total counter",
            f"vllm:prompt_tokens_total{{{label}}} {float(self.prompt_tokens)}",
            "# TYPE vllm:e2e_request_latency_seconds histogram",
        ]
        for bound, count in zip(LATENCY_BUCKETS, self.latency.buckets, strict=True):
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(
                f'vllm:e2e_request_latency_seconds_bucket{{le="{le}",{label}}} {float(count)}'
            )
        lines.append(f"vllm:e2e_request_latency_seconds_sum{{{label}}} {self.latency.total}")
        lines.append(
            f"vllm:e2e_request_latency_seconds_count{{{label}}} {float(self.latency.count)}"
        )
        return "\n".join(lines) + "\n"


class FakeTriton:
    """Triton's health, model readiness and metrics routes, driven by knobs."""

    def __init__(self, models: list[str]) -> None:
        self.live = True
        self.ready = True
        self.ready_models = set(models)
        self.models = list(models)
        self.pending = 0.0
        self.success = 0
        self.failure = 0
        self.request_duration_us = 0.0
        self.queue_duration_us = 0.0

    def record(
        self, *, ok: int = 0, failed: int = 0, duration_ms: float = 10.0, queue_ms: float = 1.0
    ) -> None:
        """Account ``ok`` successful requests of ``duration_ms`` and ``failed`` failed ones."""
        self.success += ok
        self.failure += failed
        self.request_duration_us += ok * duration_ms * 1000
        self.queue_duration_us += ok * queue_ms * 1000

    def app(self) -> FastAPI:
        app = FastAPI()
        app.get("/v2/health/live")(self._live)
        app.get("/v2/health/ready")(self._ready)
        app.get("/v2/models/{name}/ready")(self._model_ready)
        app.get("/metrics")(self._metrics)
        return app

    async def _live(self) -> Response:
        return Response(status_code=200 if self.live else 400)

    async def _ready(self) -> Response:
        return Response(status_code=200 if self.ready else 400)

    async def _model_ready(self, name: str) -> Response:
        return Response(status_code=200 if name in self.ready_models else 400)

    async def _metrics(self) -> PlainTextResponse:
        return PlainTextResponse(self.metrics_text())

    def metrics_text(self) -> str:
        lines = []
        for i, model in enumerate(self.models):
            share = 1.0 if i == 0 else 0.0  # every count on the first model: enough for sums
            label = f'model="{model}",version="1"'
            lines += [
                *_gauge("nv_inference_pending_request_count", label, self.pending * share),
                *_counter("nv_inference_request_success", label, self.success * share),
                *_counter("nv_inference_request_failure", label, self.failure * share),
                *_counter("nv_inference_count", label, self.success * share),
                *_counter("nv_inference_exec_count", label, self.success * share),
                *_counter(
                    "nv_inference_request_duration_us", label, self.request_duration_us * share
                ),
                *_counter("nv_inference_queue_duration_us", label, self.queue_duration_us * share),
            ]
        return "\n".join(lines) + "\n"


def _gauge(name: str, labels: str, value: float) -> list[str]:
    return [f"# TYPE {name} gauge", f"{name}{{{labels}}} {float(value)}"]


def _counter(name: str, labels: str, value: float) -> list[str]:
    return [f"# TYPE {name} counter", f"{name}{{{labels}}} {float(value)}"]


def _openai_error(status: int, message: str) -> JSONResponse:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    return JSONResponse(body, status_code=status)


class _QuietServer(uvicorn.Server):
    """uvicorn without signal handling: the test or bench owns the process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class EngineServer:
    """Serve ``app`` on 127.0.0.1 in the running loop; stop and restart on the same port."""

    def __init__(self, app: FastAPI, port: int = 0) -> None:
        self.app = app
        self.port = port
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> EngineServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_config=None, access_log=False, lifespan="off", timeout_keep_alive=30
        )
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                await self._task  # raises what went wrong
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        """Stop at once (in-flight requests are cut): the engine is dead from now on."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        self._server.force_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._server = None
        self._task = None
