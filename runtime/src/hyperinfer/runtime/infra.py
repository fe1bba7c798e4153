"""The set of infrastructure connections one service needs, connected and closed together."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hyperinfer.runtime.connections import NatsConnection, PostgresPool, RedisConnection
from hyperinfer.runtime.health import Health
from hyperinfer.runtime.settings import ServiceSettings


@dataclass
class Infra:
    """Optional NATS, Redis and PostgreSQL connections of one service process."""

    nats: NatsConnection | None = None
    redis: RedisConnection | None = None
    postgres: PostgresPool | None = None

    @classmethod
    def for_service(
        cls,
        name: str,
        settings: ServiceSettings,
        *,
        nats: bool = False,
        redis: bool = False,
        postgres: bool = False,
        postgres_pool_size: int = 10,
    ) -> Infra:
        return cls(
            nats=NatsConnection(settings.nats_url, f"hyperinfer-{name}") if nats else None,
            redis=RedisConnection(settings.redis_url) if redis else None,
            postgres=(
                PostgresPool(settings.postgres_dsn.get_secret_value(), max_size=postgres_pool_size)
                if postgres
                else None
            ),
        )

    def _present(self) -> list[NatsConnection | RedisConnection | PostgresPool]:
        return [c for c in (self.nats, self.redis, self.postgres) if c is not None]

    def register(self, health: Health) -> None:
        """Add one readiness check per connection."""
        for conn in self._present():
            health.add_check(conn.health_check())

    async def connect(self, timeout_s: float) -> None:
        """Connect everything concurrently; the first failure is one clear error.

        The other attempts are cancelled then, so nothing retries on in the background.
        """
        tasks = [asyncio.ensure_future(c.connect(timeout_s)) for c in self._present()]
        if not tasks:
            return
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                raise failure

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._present()), return_exceptions=True)

    def require_nats(self) -> NatsConnection:
        assert self.nats is not None, "this service was built without NATS"
        return self.nats

    def require_redis(self) -> RedisConnection:
        assert self.redis is not None, "this service was built without Redis"
        return self.redis

    def require_postgres(self) -> PostgresPool:
        assert self.postgres is not None, "this service was built without PostgreSQL"
        return self.postgres
