"""Connections to NATS, Redis and PostgreSQL with probes for readiness.

Each wrapper connects with retries until ``startup_timeout_s`` (then one clear
``DependencyUnavailable`` line), keeps reconnecting for ever once running, and
exposes ``check()`` for ``/health/ready``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import nats
import redis.asyncio as aioredis
from hyperinfer.runtime.errors import DependencyUnavailable
from hyperinfer.runtime.health import DependencyCheck
from hyperinfer.runtime.logs import get_logger
from hyperinfer.runtime.settings import redact_url
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

log = get_logger(__name__)
T = TypeVar("T")


async def connect_with_retry(
    what: str, target: str, attempt: Callable[[], Awaitable[T]], timeout_s: float
) -> T:
    """Call ``attempt`` until it succeeds or ``timeout_s`` passes, then fail in one line."""
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        try:
            return await attempt()
        except (
            OSError,
            TimeoutError,
            asyncpg.PostgresError,
            aioredis.RedisError,
            nats.errors.Error,
        ) as exc:
            if time.monotonic() + delay > deadline:
                reason = str(exc) or type(exc).__name__
                raise DependencyUnavailable(
                    f"cannot reach {what} at {redact_url(target)}: {reason}"
                ) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


class NatsConnection:
    """A nats-py client that reconnects for ever, plus its JetStream context."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self._nc: NatsClient | None = None
        self._closing = False

    @property
    def client(self) -> NatsClient:
        if self._nc is None:
            raise RuntimeError("NATS is not connected yet")
        return self._nc

    @property
    def jetstream(self) -> JetStreamContext:
        return self.client.jetstream()

    @property
    def server_version(self) -> tuple[int, int, int]:
        """The server's version from its INFO, e.g. ``(2, 9, 10)``, to gate features."""
        raw = str(self.client._server_info.get("version", "0.0.0"))
        parts = [int("".join(ch for ch in p if ch.isdigit()) or 0) for p in raw.split(".")[:3]]
        major, minor, patch = [*parts, 0, 0, 0][:3]
        return major, minor, patch

    async def connect(self, timeout_s: float) -> None:
        async def attempt() -> NatsClient:
            return await nats.connect(
                self.url,
                name=self.name,
                connect_timeout=2,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnect,
                reconnected_cb=self._on_reconnect,
            )

        self._nc = await connect_with_retry("NATS", self.url, attempt, timeout_s)

    async def _on_error(self, exc: Exception) -> None:
        log.debug("nats error: %s", exc)

    async def _on_disconnect(self) -> None:
        if not self._closing:  # our own close is not news
            log.warning("nats disconnected", extra={"dependency": "nats"})

    async def _on_reconnect(self) -> None:
        log.info("nats reconnected", extra={"dependency": "nats"})

    async def check(self) -> None:
        if self._nc is None or not self._nc.is_connected:
            raise ConnectionError("not connected")
        await self._nc.flush(timeout=1)

    def health_check(self) -> DependencyCheck:
        return DependencyCheck("nats", self.check)

    async def close(self) -> None:
        self._closing = True
        if self._nc is not None and not self._nc.is_closed:
            try:
                await asyncio.wait_for(self._nc.drain(), 5)
            except Exception:
                await self._nc.close()


class RedisConnection:
    """A pooled redis-py asyncio client; the pool reconnects on its own."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self.url = url
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=1,
            socket_timeout=kwargs.pop("socket_timeout", 2),
            health_check_interval=kwargs.pop("health_check_interval", 10),
            retry_on_timeout=False,
            **kwargs,
        )

    async def connect(self, timeout_s: float) -> None:
        await connect_with_retry("Redis", self.url, self.client.ping, timeout_s)

    async def check(self) -> None:
        await self.client.ping()

    def health_check(self) -> DependencyCheck:
        return DependencyCheck("redis", self.check)

    async def close(self) -> None:
        await self.client.aclose()


class PostgresPool:
    """An asyncpg pool; a probe acquires a connection and runs ``SELECT 1``."""

    def __init__(self, dsn: str, min_size: int = 1, max_size: int = 10) -> None:
        self.dsn = dsn
        self._min = min_size
        self._max = max_size
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("PostgreSQL is not connected yet")
        return self._pool

    async def connect(self, timeout_s: float) -> None:
        async def attempt() -> asyncpg.Pool:
            return await asyncpg.create_pool(
                self.dsn,
                min_size=self._min,
                max_size=self._max,
                timeout=2,
                command_timeout=30,
            )

        try:
            self._pool = await connect_with_retry("PostgreSQL", self.dsn, attempt, timeout_s)
        except (ValueError, asyncpg.InterfaceError) as exc:  # malformed DSN
            raise DependencyUnavailable(
                f"invalid PostgreSQL DSN {redact_url(self.dsn)}: {exc}"
            ) from None

    async def check(self) -> None:
        async with self.pool.acquire(timeout=1) as conn:
            await conn.fetchval("SELECT 1")

    def health_check(self) -> DependencyCheck:
        return DependencyCheck("postgres", self.check, timeout_s=2.0)

    async def close(self) -> None:
        if self._pool is not None:
            await asyncio.wait_for(self._pool.close(), 5)
