"""A background task that runs one coroutine function every so often, whatever happens."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from hyperinfer.client.lifecycle import raise_if_cancelled, stop_task
from hyperinfer.runtime import get_logger

log = get_logger(__name__)


class Periodic:
    """Run ``job`` now and then every ``interval_s``; a failure is logged, not fatal."""

    def __init__(self, name: str, interval_s: float, job: Callable[[], Awaitable[object]]) -> None:
        self.name = name
        self._interval = interval_s
        self._job = job
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._job()
                self.last_error = None
            except Exception as exc:
                raise_if_cancelled()  # a cancel a library turned into an error
                first = self.last_error is None
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                if first:  # one line per outage, not one per tick
                    log.warning("%s failed: %s", self.name, self.last_error)
            await asyncio.sleep(self._interval)
