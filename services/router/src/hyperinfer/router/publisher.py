"""Decide, version, store and announce routing tables.

Every ``recompute_interval_s`` (or at once when a backend is ejected or readmitted, or the
config changes) the publisher decides every alias from the current state. It publishes
when the table changed materially (a weight moved by ``material_change``, a health flag,
the candidates, the fallback) or ``publish_max_interval_s`` passed: it takes the next
version from a Redis sequence, stores the table with ``store_routing_table`` (Redis hash +
pub/sub notice, monotonic) and publishes it on ``hyperinfer.router.v1.table``.

Several router replicas may run: one holds a lease in Redis and publishes; the others
decide the same way (for resolve and explain) and take over when the lease lapses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from hyperinfer.client.lifecycle import raise_if_cancelled
from hyperinfer.client.routing_table import empty_table, store_routing_table
from hyperinfer.contracts import names, utc_now
from hyperinfer.contracts.config.v1 import ConfigSnapshot
from hyperinfer.contracts.routing.v1 import EVENT_TABLE, RoutingTablePublished
from hyperinfer.router.domain import AliasDecision, Policy, decide_table, material_change, to_table
from hyperinfer.router.state import RouterState
from hyperinfer.runtime.bus import Bus
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RESIGN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RAISE_SEQUENCE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""


class TablePublisher:
    def __init__(
        self,
        *,
        state: RouterState,
        policy: Policy,
        config: Callable[[], ConfigSnapshot],
        redis: aioredis.Redis,
        bus: Bus,
        recompute_interval_s: float,
        publish_max_interval_s: float,
        material_change: float,
        leader_lease_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._state = state
        self._policy = policy
        self._config = config
        self._redis = redis
        self._bus = bus
        self._interval_s = recompute_interval_s
        self._max_interval_s = publish_max_interval_s
        self._threshold = material_change
        self._lease_ms = int(leader_lease_s * 1000)
        self._clock = clock
        self._instance = uuid.uuid4().hex
        self.wake = asyncio.Event()
        self.decisions: list[AliasDecision] = []
        self.table: RoutingTablePublished = empty_table()
        self.leader = False
        self.published_at: float | None = None
        self.published_count = 0
        self.last_error: str | None = None

    def decide(self) -> list[AliasDecision]:
        """Decide every alias of the current config from the current state."""
        snapshot = self._config()
        now = self._clock()
        self._state.prune(now)
        backends = snapshot.backends
        return decide_table(
            snapshot, lambda b, m: self._state.view(backends.get(b), b, m, now), self._policy
        )

    async def tick(self) -> bool:
        """Decide, and publish if this replica leads and the table is due. True if published."""
        self.decisions = self.decide()
        snapshot = self._config()
        candidate = to_table(self.decisions, self.table.version, snapshot.version, utc_now())
        try:
            self.leader = await self._hold_lease()
            if not self.leader:
                self.table = candidate.model_copy(update={"version": await self._stored_version()})
                return False
            if not self._due(candidate):
                return False
            return await self._publish(candidate)
        except RedisError as exc:
            self._failed(f"Redis: {type(exc).__name__}: {exc}")
            return False

    def _due(self, candidate: RoutingTablePublished) -> bool:
        if self.published_at is None or self.table.version == 0:
            return True
        if self._clock() - self.published_at >= self._max_interval_s:
            return True
        return material_change(self.table, candidate, self._threshold)

    async def _publish(self, candidate: RoutingTablePublished) -> bool:
        version = int(await self._redis.incr(names.ROUTING_TABLE_SEQ_KEY))
        table = candidate.model_copy(update={"version": version, "generated_at": utc_now()})
        if not await store_routing_table(self._redis, table):
            stored = await self._stored_version()  # the sequence fell behind the stored table
            await self._redis.eval(_RAISE_SEQUENCE, 1, names.ROUTING_TABLE_SEQ_KEY, stored)
            self._failed(f"version {version} refused: {stored} is stored; sequence raised")
            return False
        self._announce_changes(self.table, table)
        self.table, self.published_at = table, self._clock()
        self.published_count += 1
        self.last_error = None
        try:
            await self._bus.publish(names.ROUTING_TABLE, EVENT_TABLE, table)
        except Exception as exc:  # the Redis copy is what nodes apply; NATS is a courtesy
            log.warning("routing table not announced on NATS: %s", f"{type(exc).__name__}: {exc}")
        return True

    async def _hold_lease(self) -> bool:
        held = await self._redis.eval(
            _LEASE, 1, names.ROUTER_LEADER_KEY, self._instance, self._lease_ms
        )
        return bool(held)

    async def _stored_version(self) -> int:
        raw = await self._redis.hget(names.ROUTING_TABLE_KEY, "version")
        return int(raw) if raw is not None else 0

    def _failed(self, reason: str) -> None:
        if reason != self.last_error:
            log.warning("routing table not published: %s", reason)
        self.last_error = reason

    @staticmethod
    def _announce_changes(old: RoutingTablePublished, new: RoutingTablePublished) -> None:
        if old.static_fallback != new.static_fallback:
            level = logging.WARNING if new.static_fallback else logging.INFO
            log.log(
                level,
                "static fallback %s",
                "on" if new.static_fallback else "off",
                extra={"aliases": new.fallback_aliases},
            )

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self._interval_s)
            self.wake.clear()
            try:
                await self.tick()
            except Exception:
                raise_if_cancelled()  # a cancel a library turned into an error
                log.exception("routing decision failed; retrying next round")

    async def resign(self) -> None:
        """Give the lease up so another replica publishes at once."""
        try:
            await self._redis.eval(_RESIGN, 1, names.ROUTER_LEADER_KEY, self._instance)
        except RedisError as exc:
            log.debug("resign failed: %s", exc)

    def status(self) -> dict[str, Any]:
        published_ago = None
        if self.published_at is not None:
            published_ago = round(self._clock() - self.published_at, 3)
        return {
            "publisher": self.leader,
            "table_version": self.table.version,
            "config_version": self.table.config_version,
            "static_fallback": self.table.static_fallback,
            "fallback_aliases": self.table.fallback_aliases,
            "tables_published": self.published_count,
            "last_published_s_ago": published_ago,
            "aliases": len(self.decisions),
            "last_error": self.last_error,
        }
