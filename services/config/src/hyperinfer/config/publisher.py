"""Publishing the config snapshot: PostgreSQL → Redis (hash + pub/sub) → NATS.

After a change commits at version N, ``publish(N)`` builds the snapshot from one
consistent read (which reflects every change ≤ its version, see the PostgreSQL
adapter) and stores it with ``store_snapshot``, which refuses anything older than
what Redis holds; only a snapshot actually stored is announced on NATS. Concurrent
changes queue on one lock, so a burst of commits costs one build: whoever holds the
lock builds the newest state, and the callers behind it find their version published.

``repair`` (at start-up and every ``republish_interval_s``) costs one PostgreSQL and
one Redis read when nothing changed; it republishes when Redis lost the snapshot
(flushed, restarted) or a publish failed, and moves the version sequence past a
Redis version from a database that was since reset or restored.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from hyperinfer.client.config_agent import CONFIG, store_snapshot
from hyperinfer.client.lifecycle import raise_if_cancelled, stop_task
from hyperinfer.config.domain import build_snapshot
from hyperinfer.config.ports import GovernanceStore
from hyperinfer.contracts import utc_now
from hyperinfer.contracts.config.v1 import ConfigChanged
from hyperinfer.runtime.logs import get_logger

log = get_logger(__name__)
Announce = Callable[[ConfigChanged], Awaitable[None]]


class SnapshotPublisher:
    """Builds and stores snapshots; ``published_version`` is the newest stored by us."""

    def __init__(
        self,
        store: GovernanceStore,
        redis: aioredis.Redis,
        announce: Announce,
        key_hash_salt: str,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._redis = redis
        self._announce = announce
        self._salt = key_hash_salt
        self._clock = clock
        self._lock = asyncio.Lock()
        self._pending_kinds: set[str] = set()
        self.published_version = 0
        self.published_at: float | None = None
        self.last_error: str | None = None
        self.builds = 0

    async def publish(self, at_least: int, kinds: Iterable[str] = ()) -> None:
        """Make sure Redis holds a snapshot at version ``at_least`` or newer."""
        self._pending_kinds.update(kinds)
        async with self._lock:
            if self.published_version >= at_least:
                return
            await self._build_and_store()

    async def repair(self) -> bool:
        """Republish if Redis does not hold the current version. True when it did."""
        stored = await self.redis_version()  # first: a commit between the reads cannot
        current = await self._store.current_version()  # make Redis look ahead of PostgreSQL
        if stored is not None and stored > current:
            log.warning(
                "redis holds a newer config version than postgres; moving the sequence past it",
                extra={"redis_version": stored, "postgres_version": current},
            )
            await self._store.advance_version(stored)
        elif stored is not None and stored == current:
            self.published_version = max(self.published_version, stored)
            return False
        async with self._lock:
            await self._build_and_store()
        return True

    async def redis_version(self) -> int | None:
        raw = await self._redis.hget(CONFIG.key, "version")
        return None if raw is None else int(raw)

    async def _build_and_store(self) -> None:
        kinds = sorted(self._pending_kinds)
        self._pending_kinds.clear()
        try:
            state = await self._store.read_state()
            snapshot = build_snapshot(state, self._salt, self._clock())
            stored = await store_snapshot(self._redis, snapshot, kinds)
        except Exception:
            self._pending_kinds.update(kinds)
            raise
        self.builds += 1
        # not stored: Redis already holds this version or a newer one
        self.published_version = max(self.published_version, snapshot.version)
        self.published_at = time.time()
        self.last_error = None
        if stored:
            await self._announce_quietly(
                ConfigChanged(
                    version=snapshot.version, changed_at=snapshot.generated_at, kinds=kinds
                )
            )

    async def _announce_quietly(self, event: ConfigChanged) -> None:
        try:
            await self._announce(event)
        except Exception as exc:  # Redis already told the data plane; NATS is best effort
            log.warning("config change not announced on NATS", extra={"error": repr(exc)[:300]})

    def status(self) -> dict[str, Any]:
        return {
            "version": self.published_version,
            "published_at": self.published_at,
            "builds": self.builds,
            "last_error": self.last_error,
        }

    @property
    def version(self) -> int:
        return self.published_version


class RepairLoop:
    """Runs ``publisher.repair()`` every ``interval_s``, sooner after a failed publish."""

    def __init__(self, publisher: SnapshotPublisher, interval_s: float) -> None:
        self._publisher = publisher
        self._interval_s = interval_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="config-republish")

    def wake(self) -> None:
        """Ask for a repair soon (a publish failed)."""
        self._wake.set()

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _run(self) -> None:
        delay = self._interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            delay = self._interval_s if await self._attempt() else self._backoff(delay)

    def _backoff(self, delay: float) -> float:
        return 0.5 if delay >= self._interval_s else min(delay * 2, self._interval_s)

    async def _attempt(self) -> bool:
        try:
            if await self._publisher.repair():
                log.info("config snapshot republished", extra=self._publisher.status())
        except Exception as exc:
            raise_if_cancelled()
            self._publisher.last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning(
                "config snapshot repair failed", extra={"error": self._publisher.last_error}
            )
            return False
        return True
