"""Background work run every few seconds, that survives its own failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from hyperinfer.client.lifecycle import raise_if_cancelled, stop_task
from hyperinfer.runtime import get_logger

log = get_logger(__name__)


class Periodic:
    """Run ``job`` every ``interval_s``; a failure is one log line, then the next round."""

    def __init__(self, name: str, interval_s: float, job: Callable[[], Awaitable[object]]) -> None:
        self.name = name
        self._interval = interval_s
        self._job = job
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.failures = 0
        self.last_error: str | None = None

    def start(self) -> None:
        self._stopping = False
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"quota-{self.name}")

    async def stop(self) -> None:
        self._stopping = True
        await stop_task(self._task)
        self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._interval)
            try:
                await self._job()
            except Exception as exc:
                raise_if_cancelled()  # a cancel a library turned into an error
                if self._stopping:  # a client library turned our cancellation into an error
                    return
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("%s failed: %s", self.name, self.last_error)
            else:
                self.last_error = None
