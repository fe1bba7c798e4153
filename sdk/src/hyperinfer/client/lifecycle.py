"""Stopping background tasks reliably.

A single ``task.cancel(); await task`` is not enough here. Python 3.11's
``asyncio.wait_for``/``asyncio.timeout`` and redis-py can swallow a cancellation
that lands mid-call: the task then either keeps looping (the cancel came back as a
``ConnectionError`` or a ``TimeoutError`` the loop catches) or waits for ever on a
read that never completes. Measured here: about 1 in 50 cancels of a task in a
blocking ``XREAD`` hung. So:

- ``stop_task`` cancels again and again until the task is done or a deadline
  passes, and never waits longer than that;
- loops that catch ``Exception`` around library calls call ``raise_if_cancelled()``
  in their handler, so a cancellation that came back disguised still ends them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

_RECANCEL_EVERY_S = 0.05


def cancel_requested() -> bool:
    """True when the running task was asked to stop (even if a library ate the cancel)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def raise_if_cancelled() -> None:
    """Re-raise a cancellation a library turned into another exception."""
    if cancel_requested():
        raise asyncio.CancelledError


async def stop_task(task: asyncio.Task[Any] | None, timeout_s: float = 5.0) -> bool:
    """Cancel ``task`` until it is done, for at most ``timeout_s``. True when it stopped."""
    if task is None:
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.warning("task %s did not stop within %.1fs", task.get_name(), timeout_s)
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(_RECANCEL_EVERY_S, remaining))
    if not task.cancelled() and task.exception() is not None:
        log.warning("task %s ended with %r", task.get_name(), task.exception())
    return True


async def stop_tasks(tasks: Sequence[asyncio.Task[Any]], timeout_s: float = 5.0) -> bool:
    """``stop_task`` for several tasks at once, sharing one deadline."""
    results = await asyncio.gather(*(stop_task(t, timeout_s) for t in tasks))
    return all(results)
