"""The quota state in Redis as the quota service maintains it.

Uses the client library's scripts (``post``, ``load``, ``sweep``) so the data plane
and the service agree on one layout (``hyperinfer.client.quota._keys``). The epoch
key tells this service when Redis lost its data: it is written once per Redis
lifetime, so finding it missing means a restart (or a flush) since the last look.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from hyperinfer.client.quota import pending_key, ready_key, reservation_key, script_source
from hyperinfer.contracts import names


@dataclass(frozen=True, slots=True)
class BudgetValue:
    """A budget hash's posted spend: ``spent``/``seq`` from PostgreSQL, kept until ``expire_ms``."""

    key: str
    spent: int
    seq: int
    expire_ms: int

    def args(self) -> list[int]:
        return [self.spent, self.seq, self.expire_ms]


@dataclass
class TeamPost:
    """What one team's post script carries: budget values and settled request ids."""

    budgets: list[BudgetValue]
    request_ids: list[str]


class RedisQuotaState:
    """Post spend, release holds, load budgets, sweep reservations; watch the epoch."""

    def __init__(self, redis: aioredis.Redis, *, latency: Any = None) -> None:
        self._redis = redis
        self._post = redis.register_script(script_source("post"))
        self._load = redis.register_script(script_source("load"))
        self._sweep = redis.register_script(script_source("sweep"))
        self._latency = latency

    async def now_us(self) -> int:
        seconds, micros = await self._timed(self._redis.time())
        return int(seconds) * 1_000_000 + int(micros)

    async def post(self, teams: Mapping[str, TeamPost]) -> int:
        """One post script per team, pipelined; returns the holds released."""
        if not teams:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        for team_id, post in teams.items():
            keys = [pending_key(team_id), *(b.key for b in post.budgets)]
            keys += [reservation_key(team_id, r) for r in post.request_ids]
            args: list[Any] = [len(post.budgets)]
            for budget in post.budgets:
                args += budget.args()
            args += post.request_ids
            await self._post(keys=keys, args=args, client=pipe)
        return sum(int(n) for n in await self._timed(pipe.execute()))

    async def load(self, epoch: str, teams: Mapping[str, Sequence[BudgetValue]]) -> int:
        """Load each team's budget spend and mark its budgets ready; returns hashes changed."""
        if not teams:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        for team_id, budgets in teams.items():
            args: list[Any] = [epoch]
            for budget in budgets:
                args += budget.args()
            keys = [ready_key(team_id), *(b.key for b in budgets)]
            await self._load(keys=keys, args=args, client=pipe)
        return sum(int(n) for n in await self._timed(pipe.execute()))

    async def epoch(self) -> str | None:
        value = await self._timed(self._redis.get(names.QUOTA_EPOCH_KEY))
        return value.decode() if value is not None else None

    async def claim_epoch(self, candidate: str) -> str:
        """Set the epoch if none is set; return the epoch now in force."""
        await self._timed(self._redis.set(names.QUOTA_EPOCH_KEY, candidate, nx=True))
        return (await self.epoch()) or candidate

    async def due(self, team_id: str, now_us: int, limit: int) -> list[str]:
        """Request ids whose reservation deadline passed."""
        ids = await self._timed(
            self._redis.zrangebyscore(pending_key(team_id), "-inf", now_us, start=0, num=limit)
        )
        return [i.decode() for i in ids]

    async def sweep(self, team_id: str, request_ids: Sequence[str]) -> Counter[str]:
        """Release the holds of overdue reservations; count the states found."""
        found: Counter[str] = Counter()
        if not request_ids:
            return found
        pipe = self._redis.pipeline(transaction=False)
        for request_id in request_ids:
            keys = [reservation_key(team_id, request_id), pending_key(team_id)]
            await self._sweep(keys=keys, args=[request_id], client=pipe)
        for state in await self._timed(pipe.execute()):
            found[state.decode() if isinstance(state, bytes) else str(state)] += 1
        return found

    async def _timed(self, awaitable: Any) -> Any:
        started = time.perf_counter()
        try:
            return await awaitable
        finally:
            if self._latency is not None:
                self._latency.observe(time.perf_counter() - started)
