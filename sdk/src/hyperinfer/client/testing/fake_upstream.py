"""A protocol-faithful fake LLM upstream: real HTTP, real SSE, configurable misbehaviour.

Run it::

    python -m hyperinfer.client.testing.fake_upstream --port 9000 [--latency-ms 20]
        [--per-token-ms 5] [--max-concurrency 8] [--max-queue 64] [--model m1 --model m2]
        [--api-key KEY] [--no-record]

or in-process::

    async with FakeUpstream() as fake:           # any free port; fake.url
        fake.configure(fail_status=500, fail_times=2)
        ...
    with FakeUpstream().running_in_thread() as fake:   # for sync code (SDKs, uvicorn threads)
        ...

Wire formats (one module each, all answering the same deterministic "model" of
``fake_model``): OpenAI (``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``)
in ``fake_openai``, Anthropic (``/v1/messages``) in ``fake_anthropic``, Gemini
(``/v1beta/models/{model}:generateContent`` ...) in ``fake_gemini``. A new protocol
is a module with ``ROUTES`` added to ``WIRE_ROUTES`` below.

Behaviour (``fake_core.Behaviour``: latency, failures, faults, fixed answers) applies
to every request or to one model; the capacity model (``Capacity``) queues requests
beyond ``max_concurrency``. At run time change both through the control API:

- ``GET /_fake/state``: behaviour, per-model behaviours, capacity, counters;
- ``POST /_fake/behaviour``: ``{"model": optional, <Behaviour fields>}``;
- ``POST /_fake/capacity``: ``{"max_concurrency": n|null, "max_queue": n|null}``;
- ``POST /_fake/reset``;
- ``GET /_fake/requests``: the recorded requests (path, headers, body), newest last.

``GET /metrics`` exposes vLLM's names (``vllm:num_requests_running``,
``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc``,
``vllm:request_success_total``, ``vllm:e2e_request_latency_seconds``; label ``model_name``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict
from types import TracebackType
from typing import Any

import orjson
from hyperinfer.client.testing import fake_anthropic, fake_gemini, fake_openai
from hyperinfer.client.testing.fake_core import (
    LATENCY_BUCKETS,
    Behaviour,
    FakeState,
    RecordedRequest,
)
from hyperinfer.client.testing.http_server import HttpRequest, HttpResponder, HttpServer

RouteHandler = Callable[[FakeState, HttpRequest, HttpResponder], Awaitable[None]]
Route = tuple[str, str, RouteHandler]

WIRE_ROUTES: tuple[Route, ...] = (
    *fake_openai.ROUTES,
    *fake_anthropic.ROUTES,
    *fake_gemini.ROUTES,
)


class FakeUpstream:
    """One fake upstream server (all wire formats on one port)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        models: list[str] | None = None,
        api_key: str | None = None,
        record: bool = True,
        routes: tuple[Route, ...] = WIRE_ROUTES,
    ) -> None:
        self.state = FakeState(models=models or ["fake-model"], api_key=api_key, record=record)
        self._exact = {(m, p): h for m, p, h in routes if not p.endswith("*")}
        self._prefixes = [(m, p[:-1], h) for m, p, h in routes if p.endswith("*")]
        self._server = HttpServer(self._handle, host, port)

    # --- lifecycle ----------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        """``http://host:port`` (OpenAI clients want ``url + "/v1"``)."""
        return f"http://{self._server.host}:{self._server.port}"

    async def start(self) -> FakeUpstream:
        await self._server.start()
        return self

    async def stop(self) -> None:
        await self._server.stop()

    async def __aenter__(self) -> FakeUpstream:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @contextlib.contextmanager
    def running_in_thread(self) -> Iterator[FakeUpstream]:
        """Serve from a background thread with its own event loop (for sync callers)."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        thread = threading.Thread(
            target=self._thread_main, args=(loop, ready), name="fake-upstream", daemon=True
        )
        thread.start()
        ready.wait(10)
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    def _thread_main(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self.start())
        ready.set()
        loop.run_forever()

    # --- behaviour ------------------------------------------------------------------
    def configure(self, model: str | None = None, **changes: Any) -> Behaviour:
        """Change how the fake answers (every request, or ``model``'s only)."""
        return self.state.configure(model, **changes)

    def set_capacity(self, max_concurrency: int | None, max_queue: int | None = None) -> None:
        self.state.capacity.update({"max_concurrency": max_concurrency, "max_queue": max_queue})

    def reset(self) -> None:
        self.state.reset()

    @property
    def requests(self) -> list[RecordedRequest]:
        return list(self.state.requests)

    # --- HTTP -------------------------------------------------------------------------
    async def _handle(self, request: HttpRequest, responder: HttpResponder) -> None:
        handler = self._exact.get((request.method, request.path))
        if handler is None:
            handler = next(
                (
                    h
                    for m, prefix, h in self._prefixes
                    if m == request.method and request.path.startswith(prefix)
                ),
                None,
            )
        if handler is not None:
            await handler(self.state, request, responder)
        elif request.path.startswith("/_fake/") or request.path == "/metrics":
            await self._control(request, responder)
        else:
            await responder.send(404, fake_openai.error_body(404, f"no route {request.path}"))

    async def _control(self, request: HttpRequest, responder: HttpResponder) -> None:
        route = (request.method, request.path)
        try:
            if route == ("GET", "/metrics"):
                await responder.send(200, render_metrics(self.state), "text/plain; version=0.0.4")
                return
            if route == ("GET", "/_fake/requests"):
                body: Any = [r.as_dict() for r in self.state.requests]
            elif route == ("POST", "/_fake/behaviour"):
                changes = orjson.loads(request.body or b"{}")
                self.configure(changes.pop("model", None), **changes)
                body = state_of(self.state)
            elif route == ("POST", "/_fake/capacity"):
                self.state.capacity.update(orjson.loads(request.body or b"{}"))
                body = state_of(self.state)
            elif route == ("POST", "/_fake/reset"):
                self.reset()
                body = state_of(self.state)
            elif route == ("GET", "/_fake/state"):
                body = state_of(self.state)
            else:
                await responder.send(404, fake_openai.error_body(404, f"no route {request.path}"))
                return
        except (ValueError, TypeError, AttributeError) as exc:
            await responder.send(400, fake_openai.error_body(400, str(exc)))
            return
        await responder.send(200, orjson.dumps(body))


def state_of(state: FakeState) -> dict[str, Any]:
    return {
        "behaviour": asdict(state.behaviour),
        "per_model": {m: asdict(b) for m, b in state.per_model.items()},
        "capacity": state.capacity.status(),
        "models": state.models,
        "requests_recorded": len(state.requests),
        "connections_dropped": state.connections_dropped,
    }


def render_metrics(state: FakeState) -> bytes:
    """Prometheus text in vLLM's names."""
    cap = state.capacity
    out = [
        "# TYPE vllm:num_requests_running gauge",
        "# TYPE vllm:num_requests_waiting gauge",
        "# TYPE vllm:kv_cache_usage_perc gauge",
        "# TYPE vllm:request_success_total counter",
        "# TYPE vllm:e2e_request_latency_seconds histogram",
    ]
    models = state.metrics or {m: state.model_metrics(m) for m in state.models}
    for model, m in sorted(models.items()):
        label = f'model_name="{model}"'
        usage = m.running / cap.max_concurrency if cap.max_concurrency else 0.0
        out.append(f"vllm:num_requests_running{{{label}}} {m.running}")
        out.append(f"vllm:num_requests_waiting{{{label}}} {m.waiting}")
        out.append(f"vllm:kv_cache_usage_perc{{{label}}} {min(usage, 1.0):.4f}")
        out.append(f"vllm:request_success_total{{{label}}} {m.success}")
        for bound, count in zip(LATENCY_BUCKETS, _cumulative(m.latency_buckets), strict=True):
            out.append(f'vllm:e2e_request_latency_seconds_bucket{{{label},le="{bound}"}} {count}')
        out.append(
            f'vllm:e2e_request_latency_seconds_bucket{{{label},le="+Inf"}} {m.latency_count}'
        )
        out.append(f"vllm:e2e_request_latency_seconds_sum{{{label}}} {m.latency_sum:.6f}")
        out.append(f"vllm:e2e_request_latency_seconds_count{{{label}}} {m.latency_count}")
    return ("\n".join(out) + "\n").encode()


def _cumulative(buckets: list[int]) -> list[int]:
    # ``observe`` already counts an observation in every bucket it fits (cumulative)
    return list(buckets)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A fake OpenAI/Anthropic upstream for tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--model", action="append", dest="models", help="served model name(s)")
    parser.add_argument("--api-key", default=None, help="require this key (Bearer / x-api-key)")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--per-token-ms", type=float, default=0.0)
    parser.add_argument("--max-concurrency", type=int, default=None)
    parser.add_argument("--max-queue", type=int, default=None)
    parser.add_argument("--answer", default=None, help="a fixed answer text")
    parser.add_argument("--no-record", action="store_true", help="do not keep recent requests")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeUpstream(
        args.host, args.port, models=args.models, api_key=args.api_key, record=not args.no_record
    )
    fake.configure(
        latency_s=args.latency_ms / 1000, per_token_s=args.per_token_ms / 1000, answer=args.answer
    )
    fake.set_capacity(args.max_concurrency, args.max_queue)
    await fake.start()
    sys.stdout.write(f"fake upstream listening on {fake.url}\n")
    sys.stdout.flush()
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise SystemExit(
            f"fake upstream: cannot listen on {args.host}:{args.port}: {exc}"
        ) from None


if __name__ == "__main__":
    main()
