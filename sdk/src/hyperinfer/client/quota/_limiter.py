"""The quota limiter: one EVALSHA per request, and the Redis failure policy.

``reserve`` runs the reserve script (RPM and TPM GCRA plus budget reservation for
the key and its team, all or nothing, on server time) and returns a
``Reservation`` or raises ``QuotaExceeded`` (a ``RateLimited``: 429 with the exact
wait) or ``QuotaUnavailable`` (503). ``settle_into`` queues the settle on the
caller's pipeline, next to its usage ``XADD``.

When Redis cannot be reached the node switches, per team, to that team's policy:
fail-closed teams get ``QuotaUnavailable``; fail-open teams are limited in process
at their rate divided by the live replica count (``LocalLimiter``). A background
heartbeat (``start``) keeps the replica count and notices Redis coming back;
without it, one request per ``retry_interval_s`` probes Redis. Each switch is one
log line, a counter in ``QuotaMetrics`` and a call to its listeners.

Transport: the reserve goes through redis-py by default. The data plane passes
``wire=`` (a ``hyperinfer.client.resp.RespClient``: one pipelined connection, hiredis)
so that the call on every request costs ~15 µs of client CPU instead of ~50-200; it
raises the same redis-py exceptions, so the decisions and the failure policy are the
same whichever carries the script. ``settle_command`` gives the settle as one command
for such a client's batches (``settle_into`` queues it on a redis-py pipeline).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from hyperinfer.client.errors import QuotaUnavailable, RateLimited
from hyperinfer.client.lifecycle import raise_if_cancelled, stop_task
from hyperinfer.client.quota import _keys
from hyperinfer.client.quota._index import Limits
from hyperinfer.client.quota._local import LocalLimiter
from hyperinfer.client.quota._metrics import Mode, PolicySwitch, QuotaMetrics
from hyperinfer.client.quota._scripts import source
from hyperinfer.client.resp import RespClient, Script
from hyperinfer.contracts import names
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("hyperinfer.client.quota")

UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OutOfMemoryError,
    ReadOnlyError,
    OSError,
)
_REASONS = {1: ("rpm", "key"), 2: ("rpm", "team"), 3: ("tpm", "key"), 4: ("tpm", "team")}
_REASONS |= {5: ("budget", "key"), 6: ("budget", "team")}
_WHAT = {"rpm": "requests per minute", "tpm": "tokens per minute", "budget": "budget"}
_MAX_ARG = 2**53 - 1


def hot_path_redis(
    url: str, *, timeout_s: float = 0.5, max_connections: int | None = None
) -> aioredis.Redis:
    """A Redis client fit for the quota check on every request.

    redis-py's default retries a failed command ten times with backoff (seconds),
    which would hold every request that long when Redis dies; here a command is
    retried once at once (a pooled connection gone stale after a Redis restart) and
    never waits longer than ``timeout_s``, so the failure policy takes over quickly.
    """
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1),
        max_connections=max_connections,
    )


def go_duration(us: int) -> str:
    """A wait as OpenAI writes it in ``x-ratelimit-reset-*``: ``20ms``, ``1.5s``, ``6m0s``."""
    ms = max(0, -(-us // 1000))
    if ms < 1000:
        return f"{ms}ms"
    seconds, ms = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{seconds}.{ms:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    return f"{minutes}m{text}" if minutes else text


def limit_headers(out: list[int] | tuple[int, ...]) -> dict[str, str]:
    """``x-ratelimit-*`` headers from a reserve reply (fields 4..9)."""
    headers: dict[str, str] = {}
    for kind, at in (("requests", 4), ("tokens", 7)):
        if out[at] >= 0:
            headers[f"x-ratelimit-limit-{kind}"] = str(out[at])
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, out[at + 1]))
            headers[f"x-ratelimit-reset-{kind}"] = go_duration(out[at + 2])
    return headers


@dataclass(slots=True)
class Reservation:
    """An admitted request: what to settle, and what the response headers say.

    ``reply`` is the reserve script's answer (see ``reserve.lua``); ``mode`` says who
    decided (``redis`` or ``fail_open_local``).
    """

    request_id: str
    team_id: str
    tokens: int
    cost_micros: int
    res_key: bytes
    pending_key: bytes
    reply: list[int]
    mode: Mode = "redis"

    @property
    def settleable(self) -> bool:
        return self.mode == "redis" and self.reply[11] == 1

    @property
    def duplicate(self) -> bool:
        """The request id had a reservation already: nothing was taken twice."""
        return self.reply[0] == 2

    @property
    def now_us(self) -> int:
        """Server time of the decision (microseconds since the epoch)."""
        return self.reply[3]

    @property
    def remaining_requests(self) -> int | None:
        return self.reply[5] if self.reply[4] >= 0 else None

    @property
    def remaining_tokens(self) -> int | None:
        return self.reply[8] if self.reply[7] >= 0 else None

    @property
    def budget_remaining_micros(self) -> int | None:
        return self.reply[10] if self.reply[10] >= 0 else None

    def headers(self) -> dict[str, str]:
        return limit_headers(self.reply)


class QuotaExceeded(RateLimited):
    """A limit said no (429). ``reason``: rpm, tpm or budget; ``scope``: key or team.

    ``retry_after_ms`` is exact: waiting that long (and no other traffic) admits the
    request. ``never`` means no wait helps (the request is larger than the limit).
    """

    def __init__(self, reason: str, scope: str, subject: str, reply: list[int]) -> None:
        retry_us = reply[2]
        self.reason, self.scope, self.reply = reason, scope, reply
        self.never = retry_us < 0
        self.retry_after_us = max(0, retry_us)
        code = "insufficient_quota" if reason == "budget" else "rate_limit_exceeded"
        super().__init__(
            _message(reason, scope, subject, retry_us),
            retry_after_ms=-(-self.retry_after_us // 1000),
            code="request_too_large" if self.never else code,
            limit_headers=limit_headers(reply),
        )

    def headers(self) -> dict[str, str]:
        if self.never:
            return dict(self.limit_headers)
        return super().headers()


def _message(reason: str, scope: str, subject: str, retry_us: int) -> str:
    what = f"{_WHAT[reason]} of {scope} {subject}"
    if retry_us < 0:
        return f"Request is larger than the {what}; it cannot be admitted at this limit."
    if reason == "budget":
        return f"Budget exhausted for {scope} {subject}; it resets in {go_duration(retry_us)}."
    return f"Rate limit reached for {what}. Please try again in {go_duration(retry_us)}."


class QuotaLimiter:
    """Reserve and settle quota for one node (an ingress replica, a thick client)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        node_id: str,
        metrics: QuotaMetrics | None = None,
        reservation_ttl_s: float = 900.0,
        post_deadline_s: float = 600.0,
        heartbeat_s: float = 2.0,
        retry_interval_s: float = 0.5,
        require_budgets_loaded: bool = True,
        wire: RespClient | None = None,
    ) -> None:
        self._redis = redis
        self._wire = wire
        self.node_id = node_id
        self.metrics = metrics or QuotaMetrics()
        self._ttl_us = int(reservation_ttl_s * 1e6)
        self._post_us = int(post_deadline_s * 1e6)
        self._heartbeat_s = heartbeat_s
        self._retry_s = retry_interval_s
        self._gate = 1 if require_budgets_loaded else 0
        self._reserve = redis.register_script(source("reserve"))
        self._reserve_wire = Script(source("reserve"))
        self._settle = redis.register_script(source("settle"))
        self._settle_wire = Script(source("settle"))
        self._nodes = redis.register_script(source("nodes"))
        self._local = LocalLimiter()
        self.replicas = 1
        self._down = False
        self._probe_at = 0.0
        self._team_modes: dict[str, Mode] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def redis_up(self) -> bool:
        return not self._down

    # --- the hot path ---------------------------------------------------------------
    async def reserve(
        self,
        *,
        request_id: str,
        team_id: str,
        key_id: str,
        tokens: int,
        cost_micros: int,
        limits: Limits,
    ) -> Reservation:
        """Take one request's share of every limit of ``limits``, or raise.

        Raises ``QuotaExceeded`` (429) or ``QuotaUnavailable`` (503: Redis down and
        the team fails closed). ``team_id``/``key_id`` name the caller; ``limits``
        (from ``QuotaIndex.limits``) carries the keys and numbers.
        """
        _check_amounts(tokens, cost_micros)
        return await self._decide(request_id, tokens, cost_micros, limits, dry_run=False)

    async def check(
        self, *, request_id: str, tokens: int, cost_micros: int, limits: Limits
    ) -> Reservation:
        """Like ``reserve`` but takes nothing: would this request pass now?"""
        _check_amounts(tokens, cost_micros)
        return await self._decide(request_id, tokens, cost_micros, limits, dry_run=True)

    def settle_into(
        self,
        pipe: Pipeline,
        reservation: Reservation,
        actual_tokens: int,
        actual_cost_micros: int,
    ) -> None:
        """Queue the settle on ``pipe`` (the caller executes it with its usage XADD).

        Sent as EVAL, not EVALSHA: a pipeline cannot reload a script Redis forgot.
        """
        command = self.settle_command(reservation, actual_tokens, actual_cost_micros)
        if command is not None:
            pipe.eval(self._settle_wire.source, *command[2:])

    def settle_command(
        self, reservation: Reservation, actual_tokens: int, actual_cost_micros: int
    ) -> tuple[Any, ...] | None:
        """The settle as one ``EVALSHA`` command (None: nothing to settle), for a batch.

        The caller sends it (e.g. ``RespClient.execute_many`` beside its usage ``XADD``)
        and, should the reply be ``NoScriptError``, sends ``settle_eval(command)`` instead.
        """
        if not reservation.settleable or reservation.duplicate:
            return None
        tokens, cost = _clamp(actual_tokens), _clamp(actual_cost_micros)
        self.metrics.settled(reservation.tokens, tokens, reservation.cost_micros, cost)
        keys = (reservation.res_key, reservation.pending_key)
        return self._settle_wire.evalsha(
            keys, (reservation.request_id, tokens, cost, self._post_us)
        )

    def settle_eval(self, command: tuple[Any, ...]) -> tuple[Any, ...]:
        """``settle_command``'s command as ``EVAL`` (after a ``NOSCRIPT`` reply)."""
        return (b"EVAL", self._settle_wire.source, *command[2:])

    async def settle(
        self, reservation: Reservation, actual_tokens: int, actual_cost_micros: int
    ) -> None:
        """Settle in a round trip of its own (when there is no usage event to pipeline)."""
        pipe = self._redis.pipeline(transaction=False)
        self.settle_into(pipe, reservation, actual_tokens, actual_cost_micros)
        if len(pipe):
            await pipe.execute()

    async def settle_request(
        self, team_id: str, request_id: str, actual_tokens: int, actual_cost_micros: int
    ) -> tuple[bool, int, int]:
        """Settle by request id alone: ``(settled, refunded tokens, refunded cost)``."""
        keys = [_keys.reservation_key(team_id, request_id), _keys.pending_key(team_id)]
        args: list[str | int] = [
            request_id,
            _clamp(actual_tokens),
            _clamp(actual_cost_micros),
            self._post_us,
        ]
        out = await self._settle(keys=keys, args=args)
        return bool(out[0]), int(out[1]), int(out[2])

    async def _decide(
        self,
        request_id: str,
        tokens: int,
        cost: int,
        limits: Limits,
        *,
        dry_run: bool,
        gate: int | None = None,
        at_us: int | None = None,
    ) -> Reservation:
        if self._down and not self._probe_due():
            return self._degraded(request_id, tokens, cost, limits)
        res_key = limits.res_prefix + request_id.encode()
        flags = dry_run + 2 * (self._gate if gate is None else gate)
        args: list[Any] = [request_id, tokens, cost, flags, self._ttl_us, limits.spec]
        if at_us is not None:  # tests only: drive the script's clock
            args.append(at_us)
        started = time.perf_counter()
        try:
            if self._wire is not None:
                out: list[int] = await self._wire.evalsha(
                    self._reserve_wire, (*limits.keys, res_key), args
                )
            else:
                out = await self._reserve(keys=[*limits.keys, res_key], args=args)
        except UNAVAILABLE_ERRORS as exc:
            self._went_down(exc)
            return self._degraded(request_id, tokens, cost, limits)
        self.metrics.redis_latency.observe(time.perf_counter() - started)
        if self._down:
            self._came_back("a request reached Redis")
        status = out[0]
        if status == 1 or status == 2:
            self.metrics.checks["allowed"] += 1
            pending = limits.keys[7]
            return Reservation(request_id, limits.team_id, tokens, cost, res_key, pending, out)
        if status == 3:
            return await self._not_loaded(request_id, tokens, cost, limits, dry_run, at_us)
        self.metrics.checks["denied"] += 1
        reason, scope = _REASONS[out[1]]
        self.metrics.denials[reason] += 1
        subject = limits.key_id if scope == "key" else limits.team_id
        raise QuotaExceeded(reason, scope, subject, out)

    async def _not_loaded(
        self,
        request_id: str,
        tokens: int,
        cost: int,
        limits: Limits,
        dry_run: bool,
        at_us: int | None,
    ) -> Reservation:
        """Redis is up but lost the team's budget spend (a restart the quota service has
        not reconciled yet): closed teams wait; open teams go on without the budget."""
        if not limits.fail_open:
            self.metrics.checks["unavailable"] += 1
            self.metrics.denials["redis_unavailable"] += 1
            raise QuotaUnavailable(
                f"budget state of team {limits.team_id} is being reloaded; retry shortly",
                code="quota_reloading",
            )
        return await self._decide(
            request_id, tokens, cost, limits, dry_run=dry_run, gate=0, at_us=at_us
        )

    # --- Redis down ---------------------------------------------------------------
    def _degraded(self, request_id: str, tokens: int, cost: int, limits: Limits) -> Reservation:
        mode: Mode = "fail_open_local" if limits.fail_open else "fail_closed"
        if self._team_modes.get(limits.team_id) != mode:
            self._team_modes[limits.team_id] = mode
            self.metrics.switched(
                PolicySwitch(self.node_id, mode, limits.team_id, "redis unreachable")
            )
        if mode == "fail_closed":
            self.metrics.checks["unavailable"] += 1
            self.metrics.denials["redis_unavailable"] += 1
            raise QuotaUnavailable("quota store unavailable and this team fails closed")
        allowed, retry_s, why = self._local.acquire(limits, tokens, self.replicas)
        if allowed:
            self.metrics.checks["local_allowed"] += 1
            reply = [1, 0, 0, 0, -1, -1, 0, -1, -1, 0, -1, 0]
            return Reservation(
                request_id, limits.team_id, tokens, cost, b"", b"", reply, mode="fail_open_local"
            )
        self.metrics.checks["local_denied"] += 1
        self.metrics.denials[why] += 1
        retry_us = -1 if retry_s < 0 else int(retry_s * 1e6) + 1
        reply = [0, 0, retry_us, 0, -1, -1, 0, -1, -1, 0, -1, 0]
        raise QuotaExceeded(why, "node", self.node_id, reply)

    def _probe_due(self) -> bool:
        now = time.monotonic()
        if now < self._probe_at:
            return False
        self._probe_at = now + self._retry_s
        return True

    def _went_down(self, exc: BaseException) -> None:
        self.metrics.redis_errors += 1
        self._probe_at = time.monotonic() + self._retry_s
        if self._down:
            return
        self._down = True
        self.metrics.redis_up = False
        log.warning(
            "quota store unreachable from node %s (%s: %s); team failure policies apply, "
            "%d live replicas",
            self.node_id,
            type(exc).__name__,
            exc,
            self.replicas,
        )

    def _came_back(self, how: str) -> None:
        self._down = False
        self.metrics.redis_up = True
        self._local.reset()
        teams, self._team_modes = self._team_modes, {}
        self.metrics.switched(PolicySwitch(self.node_id, "redis", None, f"redis back: {how}"))
        for team_id in teams:
            self.metrics.switched(PolicySwitch(self.node_id, "redis", team_id, "redis back"))

    # --- liveness ---------------------------------------------------------------------
    async def start(self) -> None:
        """Start the heartbeat (live replica count, recovery detection)."""
        if self._task is None:
            await self.heartbeat()
            self._task = asyncio.create_task(self._beat(), name=f"quota-heartbeat-{self.node_id}")

    async def stop(self) -> None:
        """Stop the heartbeat and leave the live set (best effort)."""
        await stop_task(self._task)
        self._task = None
        with contextlib.suppress(*UNAVAILABLE_ERRORS):
            await asyncio.wait_for(self._nodes(keys=[names.NODES_KEY], args=self._beat_args(1)), 1)

    async def heartbeat(self) -> int:
        """Announce this node; return the live replica count (the last one if Redis is down)."""
        try:
            count = await self._nodes(keys=[names.NODES_KEY], args=self._beat_args(0))
        except UNAVAILABLE_ERRORS as exc:
            self._went_down(exc)
            return self.replicas
        self.replicas = max(1, int(count))
        self.metrics.live_replicas = self.replicas
        if self._down:
            self._came_back("heartbeat reached Redis")
        return self.replicas

    def _beat_args(self, leave: int) -> list[Any]:
        return [self.node_id, int(self._heartbeat_s * 3000), leave]

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                await self.heartbeat()
            except Exception:  # keep beating whatever one beat met
                raise_if_cancelled()
                log.exception("quota heartbeat failed")


def _check_amounts(tokens: int, cost: int) -> None:
    if not 0 <= tokens <= _MAX_ARG or not 0 <= cost <= _MAX_ARG:
        raise ValueError(f"tokens and cost must be in [0, 2^53): got {tokens}, {cost}")


def _clamp(value: int) -> int:
    return min(max(0, int(value)), _MAX_ARG)
