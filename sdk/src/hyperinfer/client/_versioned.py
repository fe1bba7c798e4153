"""A versioned document in Redis, pushed to every node and never lost.

The writer stores the document and its version in one Redis hash and announces the
new version on a pub/sub channel, atomically and monotonically (an older version
never overwrites a newer one). A ``DocumentWatcher`` keeps the newest version in
memory:

- on start and after every reconnect it re-subscribes, then fetches the document,
  so a node that missed notifications while disconnected catches up at once;
- on a notice newer than what it holds it fetches the document (a gap of any size
  is repaired the same way: the document is always fetched whole);
- every ``check_interval_s`` without a notice it compares versions, which repairs a
  notice lost while the connection looked healthy.

One hash key per document keeps it to one Redis Cluster slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import orjson
import redis.asyncio as aioredis
from hyperinfer.client.lifecycle import stop_task
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

VERSION_FIELD = "version"
DOCUMENT_FIELD = "document"

_STORE = """
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '-1')
local new = tonumber(ARGV[1])
if new <= current then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'document', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""


class Versioned(Protocol):
    @property
    def version(self) -> int: ...


DocT = TypeVar("DocT", bound=BaseModel)


@dataclass(frozen=True)
class DocumentKind(Generic[DocT]):
    """Where a kind of document lives: its hash key, its channel, its model."""

    name: str
    key: str
    channel: str
    model: type[DocT]


async def store_document(
    redis: aioredis.Redis, kind: DocumentKind[Any], document: BaseModel, notice: bytes
) -> bool:
    """Store ``document`` if it is newer than the stored one, then publish ``notice``.

    Returns False (and changes nothing) when an equal or newer version is stored.
    """
    version = int(getattr(document, VERSION_FIELD))
    stored = await redis.eval(
        _STORE, 1, kind.key, version, document.model_dump_json(), kind.channel, notice
    )
    return bool(stored)


async def read_document(redis: aioredis.Redis, kind: DocumentKind[DocT]) -> DocT | None:
    """The stored document, or None when nothing was stored yet."""
    raw = await redis.hget(kind.key, DOCUMENT_FIELD)
    if raw is None:
        return None
    return kind.model.model_validate_json(raw)


def notice_version(raw: bytes | str) -> int | None:
    """The version announced by a notice: an envelope whose ``data.version`` is set."""
    try:
        body = orjson.loads(raw)
        return int(body["data"]["version"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


class DocumentWatcher(Generic[DocT]):
    """Keeps the newest version of one document kind, pushed through Redis."""

    def __init__(
        self,
        redis: aioredis.Redis,
        kind: DocumentKind[DocT],
        initial: DocT,
        *,
        check_interval_s: float = 5.0,
        max_backoff_s: float = 0.5,
    ) -> None:
        self._redis = redis
        self.kind = kind
        self._document = initial
        self._check_interval_s = check_interval_s
        self._max_backoff_s = max_backoff_s
        self._callbacks: list[Callable[[DocT], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._loaded = asyncio.Event()
        self._refresh_lock = asyncio.Lock()
        self._stopping = False
        self.connected = False
        self.applied_at: float | None = None
        self.updates_applied = 0
        self.last_error: str | None = None

    @property
    def document(self) -> DocT:
        return self._document

    @property
    def version(self) -> int:
        return int(getattr(self._document, VERSION_FIELD))

    @property
    def loaded(self) -> bool:
        """True once a stored document was read (version 0 is a real, empty document)."""
        return self._loaded.is_set()

    def on_change(self, callback: Callable[[DocT], None]) -> None:
        """Call ``callback(document)`` after every newer version is applied."""
        self._callbacks.append(callback)

    async def start(self, wait_s: float = 0.0) -> bool:
        """Start watching; wait up to ``wait_s`` for a stored document. True once loaded."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=f"watch-{self.kind.name}")
        return await self.wait_loaded(wait_s)

    async def wait_loaded(self, timeout_s: float) -> bool:
        if timeout_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._loaded.wait(), timeout_s)
        return self._loaded.is_set()

    async def stop(self) -> None:
        """Stop watching. Also when redis-py turns the cancellation into a connection
        error (it does, mid-read): the loop checks ``_stopping`` and ends."""
        self._stopping = True
        await stop_task(self._task)
        self._task = None
        self.connected = False

    async def refresh(self) -> bool:
        """Fetch the stored document and apply it if newer. True when applied."""
        async with self._refresh_lock:
            try:
                document = await read_document(self._redis, self.kind)
            except ValidationError as exc:  # keep serving the last good version
                self.last_error = f"invalid stored {self.kind.name}: {exc.error_count()} error(s)"
                log.error("%s", self.last_error)
                return False
            if document is None:
                return False
            self._loaded.set()
            if int(getattr(document, VERSION_FIELD)) <= self.version and self.applied_at:
                return False
            self._apply(document)
            return True

    def status(self) -> dict[str, Any]:
        """For ``/health/detailed``."""
        return {
            "version": self.version,
            "connected": self.connected,
            "applied_at": self.applied_at,
            "updates_applied": self.updates_applied,
            "last_error": self.last_error,
        }

    def _apply(self, document: DocT) -> None:
        self._document = document
        self.applied_at = time.time()
        self.updates_applied += 1
        for callback in self._callbacks:
            try:
                callback(document)
            except Exception:
                log.exception("%s change callback failed", self.kind.name)

    async def _run(self) -> None:
        backoff = 0.05
        while not self._stopping:
            try:
                await self._follow()
            except (RedisError, OSError) as exc:
                if self._stopping:
                    return
                if self.connected:  # it had been working: retry quickly first
                    backoff = 0.05
                self.connected = False
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("%s watch interrupted: %s", self.kind.name, self.last_error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)

    async def _follow(self) -> None:
        async with self._redis.pubsub() as pubsub:
            await pubsub.subscribe(self.kind.channel)
            self.connected = True
            self.last_error = None
            await self.refresh()  # catch up on whatever happened while not subscribed
            last_check = time.monotonic()
            while not self._stopping:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=self._check_interval_s
                )
                if message is not None:
                    announced = notice_version(message["data"])
                    if announced is None or announced > self.version:
                        await self.refresh()
                if time.monotonic() - last_check >= self._check_interval_s:
                    await self.refresh()
                    last_check = time.monotonic()
