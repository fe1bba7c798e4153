"""Run a service process: start dependencies, bind, serve, drain on SIGTERM, exit 0.

Expected failures at start-up (bad setting, unreachable dependency, taken port)
print one line on stderr and exit with status 2 — no traceback.

Order on SIGTERM: stop accepting HTTP, let in-flight requests finish (bounded by
``shutdown_grace_s``), then ``Service.shutdown`` drains background work (bounded
by the same grace), then exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI
from hyperinfer.runtime.errors import PortInUse, RuntimeStartupError
from hyperinfer.runtime.logs import configure_logging, get_logger
from hyperinfer.runtime.settings import ServiceSettings, load_settings
from hyperinfer.runtime.tracing import configure_tracing

log = get_logger(__name__)
SettingsT = TypeVar("SettingsT", bound=ServiceSettings)
Hook = Callable[[], Awaitable[None]]
_CANCEL_GRACE_S = 2.0


async def _nothing() -> None:
    return None


@dataclass
class Service:
    """What ``create_app`` returns: the HTTP app plus start-up and shutdown hooks.

    ``startup`` connects dependencies and starts background tasks (raising a
    ``RuntimeStartupError`` on expected failures); ``shutdown`` drains and closes.
    """

    name: str
    app: FastAPI
    settings: ServiceSettings
    startup: Hook = field(default=_nothing)
    shutdown: Hook = field(default=_nothing)


class _Server(uvicorn.Server):
    """uvicorn without its own signal capture: the runner owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves so a taken port is one clear error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket's proto says TCP; with proto 0, Nagle + delayed ACK add ~40 ms to every
    # response that uvicorn writes in two pieces (headers, body).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def serve(service: Service) -> None:
    """Bind, start, serve until a signal, then drain within the grace period."""
    settings = service.settings
    sock = bind_socket(settings.http_host, settings.http_port)
    server = _Server(
        uvicorn.Config(
            service.app,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
            lifespan="off",
            loop="asyncio",
        )
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _request_exit, server, sig)
    try:
        await service.startup()
        log.info("listening", extra={"addr": f"{settings.http_host}:{sock.getsockname()[1]}"})
        await server.serve(sockets=[sock])
    finally:
        shutdown: asyncio.Future[None] = asyncio.ensure_future(service.shutdown())
        if not await _finish(shutdown, settings.shutdown_grace_s):
            log.warning("shutdown exceeded grace period; exiting anyway")
        sock.close()
        await _stop_leftovers()
    log.info("stopped")


async def _finish(task: asyncio.Future[Any], timeout_s: float) -> bool:
    """Let ``task`` finish within ``timeout_s``, then cancel it until it is done (bounded).

    Not ``wait_for``: in Python 3.11 it, and redis-py, can swallow a cancellation,
    leaving a task that never ends and a process that never exits.
    """
    await asyncio.wait({task}, timeout=timeout_s)
    deadline = asyncio.get_running_loop().time() + _CANCEL_GRACE_S
    while not task.done() and asyncio.get_running_loop().time() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=0.05)
    if task.done() and not task.cancelled() and task.exception() is not None:
        log.warning("shutting down: %r", task.exception())
    return task.done() and not task.cancelled()


async def _stop_leftovers() -> None:
    """Cancel what is still running; a task that will not stop must not keep us alive."""
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    results = await asyncio.gather(*(_finish(t, 0) for t in left))
    stuck = [t.get_name() for t, _ in zip(left, results, strict=True) if not t.done()]
    if stuck:
        log.warning("tasks did not stop; exiting without them", extra={"tasks": stuck})
        log.info("stopped")
        logging.shutdown()
        os._exit(0)  # asyncio.run would wait for them for ever


def _request_exit(server: uvicorn.Server, sig: signal.Signals) -> None:
    log.info("signal received; draining", extra={"signal": sig.name})
    if server.should_exit:
        server.force_exit = True
    server.should_exit = True


def run_service(
    name: str,
    settings_cls: type[SettingsT],
    create_app: Callable[[SettingsT], Service],
) -> None:
    """The body of every ``__main__``: settings → logging → app → serve → exit code."""
    try:
        settings = load_settings(settings_cls)
        configure_logging(name, settings.log_level)
        configure_tracing(name, settings.otlp_endpoint)
        asyncio.run(serve(create_app(settings)))
    except RuntimeStartupError as exc:
        sys.stderr.write(f"hyperinfer-{name}: {exc}\n")
        sys.exit(2)
    sys.exit(0)
