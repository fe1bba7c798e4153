"""The response cache: opt-in, exact-match, for non-streaming chat completions.

A request opts in (header ``x-hyperinfer-cache: <ttl seconds>``, parsed by
:func:`requested_ttl`); the data plane then looks the answer up by a key made of the
team and the canonical request (:func:`cache_key`), and stores a fresh answer with
that TTL. Only non-streaming chat is cached (:func:`cacheable`).

::

    key = hyperinfer:cache:{t:<team>}:<model>:<blake2b-128 of the canonical request>

    ResponseCache ── RedisStore (shared by every node; SET PX, SCAN MATCH + UNLINK)
                 └── MemoryStore (this process; LRU + TTL), used while Redis is down

When a Redis call fails with a connection error or a timeout, the cache switches to
memory at once and tries Redis again every ``retry_interval_s``; when Redis answers
again it goes back to Redis and drops the in-memory entries (they may have missed an
invalidation made meanwhile). A cache failure never fails a request: it is a miss.
Hits, misses and the backend in use are in :meth:`ResponseCache.stats`
(``/health/detailed``).
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Protocol
from urllib.parse import quote

import orjson
from hyperinfer.client.errors import InvalidRequest
from hyperinfer.contracts import names
from redis import exceptions as redis_errors
from redis.asyncio import Redis

CACHE_HEADER = "x-hyperinfer-cache"
# Fields that do not change the answer: dropped before hashing.
IGNORED_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "store"})
MAX_TTL_S = 7 * 24 * 3600.0
_DOWN = (redis_errors.ConnectionError, redis_errors.TimeoutError, TimeoutError, OSError)


class CacheStore(Protocol):
    """What the data plane calls: the answer (an OpenAI chat.completion dict) by key."""

    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def set(self, key: str, value: dict[str, Any], ttl_s: float) -> None: ...


# --- keys ------------------------------------------------------------------------------
def cacheable(request: dict[str, Any]) -> bool:
    """Only non-streaming chat answers are cached."""
    return not request.get("stream") and isinstance(request.get("messages"), list)


def canonical_request(request: dict[str, Any]) -> bytes:
    """The request as sorted-key JSON, without the fields that do not change the answer."""
    kept = {k: v for k, v in request.items() if k not in IGNORED_FIELDS}
    return orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)


def cache_key(team_id: str, request: dict[str, Any]) -> str:
    """``hyperinfer:cache:{t:<team>}:<model>:<digest>``: per team, per exact request."""
    digest = hashlib.blake2b(canonical_request(request), digest_size=16).hexdigest()
    team, model = names.tenant_tag(_escape(team_id)), _escape(str(request.get("model", "")))
    return f"{names.CACHE_PREFIX}{team}:{model}:{digest}"


def key_pattern(team_id: str | None = None, model: str | None = None) -> str:
    """A glob over cache keys: everything, one team's, or one team's answers for one model."""
    if team_id is None and model is None:
        return names.CACHE_PREFIX + "*"
    team = "*" if team_id is None else names.tenant_tag(_escape(team_id))
    return f"{names.CACHE_PREFIX}{team}:" + ("*" if model is None else f"{_escape(model)}:*")


def _escape(part: str) -> str:
    """Percent-encode what would end a key part or act as a glob (``: * ? [ ] \\ { }``)."""
    return quote(part, safe="-._~/@+=,")


def requested_ttl(header: str | None, max_ttl_s: float = MAX_TTL_S) -> float | None:
    """The TTL a request asked for with ``x-hyperinfer-cache``; None: do not cache."""
    if header is None or header.strip().lower() in ("", "0", "off", "no-cache"):
        return None
    try:
        ttl = float(header)
    except ValueError:
        raise InvalidRequest(
            f"{CACHE_HEADER} must be a number of seconds (or 'off'), not {header[:40]!r}"
        ) from None
    if not 0 < ttl <= max_ttl_s:
        raise InvalidRequest(f"{CACHE_HEADER} must be between 0 and {max_ttl_s:g} seconds")
    return ttl


# --- stores ----------------------------------------------------------------------------
class MemoryStore:
    """An in-process LRU with per-entry TTL; values kept as bytes (callers get copies)."""

    def __init__(self, max_entries: int = 1024) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._entries[key] = (time.monotonic() + ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def invalidate(self, pattern: str) -> int:
        doomed = [k for k in self._entries if fnmatch.fnmatchcase(k, pattern)]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    def clear(self) -> None:
        self._entries.clear()


class RedisStore:
    """The shared store: ``SET key value PX ttl``; invalidation by ``SCAN MATCH`` + ``UNLINK``."""

    def __init__(self, redis: Redis, timeout_s: float = 0.25) -> None:
        self.redis = redis
        self.timeout_s = timeout_s

    async def get(self, key: str) -> bytes | None:
        async with asyncio.timeout(self.timeout_s):
            value = await self.redis.get(key)
        return value.encode() if isinstance(value, str) else value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        async with asyncio.timeout(self.timeout_s):
            await self.redis.set(key, value, px=max(1, int(ttl_s * 1000)))

    async def invalidate(self, pattern: str) -> int:
        removed = 0
        batch: list[bytes] = []
        async for key in self.redis.scan_iter(match=pattern, count=500):
            batch.append(key)
            if len(batch) >= 500:
                removed += int(await self.redis.unlink(*batch))
                batch.clear()
        if batch:
            removed += int(await self.redis.unlink(*batch))
        return removed


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    writes: int = 0
    skipped_too_large: int = 0
    invalidated: int = 0
    redis_errors: int = 0
    fallbacks: int = 0
    recoveries: int = 0


class ResponseCache:
    """Redis first, memory while Redis is down; implements :class:`CacheStore`."""

    def __init__(
        self,
        redis: Redis | None,
        *,
        memory_entries: int = 1024,
        max_value_bytes: int = 1 << 20,
        retry_interval_s: float = 5.0,
        redis_timeout_s: float = 0.25,
    ) -> None:
        self.redis = RedisStore(redis, redis_timeout_s) if redis is not None else None
        self.memory = MemoryStore(memory_entries)
        self.max_value_bytes = max_value_bytes
        self.retry_interval_s = retry_interval_s
        self.counters = CacheStats()
        self._redis_down_until: float | None = None  # None: Redis in use
        self._missed_invalidations: list[str] = []  # replayed on Redis when it is back

    @property
    def backend(self) -> str:
        return "redis" if self.redis is not None and self._redis_down_until is None else "memory"

    async def _redis_usable(self) -> RedisStore | None:
        """The Redis store when it may be used now; after an outage, retried on schedule."""
        if self.redis is None or self._redis_down_until is None:
            return self.redis
        if time.monotonic() < self._redis_down_until:
            return None
        try:
            for pattern in self._missed_invalidations:
                await self.redis.invalidate(pattern)
            async with asyncio.timeout(self.redis.timeout_s):
                await self.redis.redis.ping()
        except _DOWN:
            self._redis_failed()
            return None
        self._redis_down_until = None
        self._missed_invalidations.clear()
        self.counters.recoveries += 1
        self.memory.clear()
        return self.redis

    def _redis_failed(self) -> None:
        self.counters.redis_errors += 1
        if self._redis_down_until is None:
            self.counters.fallbacks += 1
        self._redis_down_until = time.monotonic() + self.retry_interval_s

    async def _load(self, key: str) -> bytes | None:
        redis = await self._redis_usable()
        if redis is not None:
            try:
                return await redis.get(key)
            except _DOWN:
                self._redis_failed()
            except redis_errors.RedisError:
                self.counters.redis_errors += 1
                return None
        return self.memory.get(key)

    async def get(self, key: str) -> dict[str, Any] | None:
        raw = await self._load(key)
        if raw is None:
            self.counters.misses += 1
            return None
        self.counters.hits += 1
        value: dict[str, Any] = orjson.loads(raw)
        return value

    async def set(self, key: str, value: dict[str, Any], ttl_s: float) -> None:
        raw = orjson.dumps(value)
        if len(raw) > self.max_value_bytes:
            self.counters.skipped_too_large += 1
            return
        self.counters.writes += 1
        redis = await self._redis_usable()
        if redis is not None:
            try:
                await redis.set(key, raw, ttl_s)
                return
            except _DOWN:
                self._redis_failed()
            except redis_errors.RedisError:
                self.counters.redis_errors += 1
                return
        self.memory.set(key, raw, ttl_s)

    async def invalidate(self, pattern: str) -> int:
        """Drop every entry whose key matches the glob (see :func:`key_pattern`).

        While Redis is down the pattern is remembered and applied to Redis before it is
        used again, so an answer invalidated during an outage is never served after it.
        """
        removed = self.memory.invalidate(pattern)
        redis = await self._redis_usable()
        if redis is not None:
            try:
                removed += await redis.invalidate(pattern)
            except _DOWN:
                self._redis_failed()
        if self.redis is not None and self._redis_down_until is not None:
            self._missed_invalidations.append(pattern)
        self.counters.invalidated += removed
        return removed

    def stats(self) -> dict[str, Any]:
        """For ``/health/detailed``: counters, hit ratio and the backend in use."""
        looked_up = self.counters.hits + self.counters.misses
        return {
            "backend": self.backend,
            "redis_configured": self.redis is not None,
            "memory_entries": len(self.memory),
            "hit_ratio": round(self.counters.hits / looked_up, 4) if looked_up else None,
            **asdict(self.counters),
        }
