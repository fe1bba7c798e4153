"""Run a real ingress (uvicorn, real sockets) in a background thread, for tests and benches.

::

    with IngressThread(IngressSettings(redis_url=url, http_port=free_port())) as ingress:
        openai.OpenAI(base_url=ingress.url + "/v1", api_key=key)...

The thread has its own event loop; ``startup`` (Redis, config agent, quota heartbeat)
runs before the port opens and ``shutdown`` (flushing usage) after it closes.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

import uvicorn
from hyperinfer.ingress.app import create_app
from hyperinfer.ingress.settings import IngressSettings
from hyperinfer.runtime.server import Service
from opentelemetry import trace


class IngressThread:
    def __init__(self, settings: IngressSettings, tracer: trace.Tracer | None = None) -> None:
        self.settings = settings
        self.service: Service = create_app(settings, tracer)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.http_host}:{self.settings.http_port}"

    def __enter__(self) -> IngressThread:
        self._thread = threading.Thread(target=self._main, name="ingress", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"ingress did not start: {self._error!r}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(30)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        await self.service.startup()
        config = uvicorn.Config(
            self.service.app,
            host=self.settings.http_host,
            port=self.settings.http_port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        task = asyncio.create_task(self._server.serve())
        for _ in range(3000):  # uvicorn offers no event to await; poll for 30 s at most
            if self._server.started or task.done():
                break
            await asyncio.sleep(0.01)
        self._ready.set()
        try:
            await task
        finally:
            await self.service.shutdown()
