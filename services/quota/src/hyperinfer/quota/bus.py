"""NATS routes: quota subjects -> plain handlers. Framework code stays here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from hyperinfer.client.quota import QuotaIndex, QuotaLimiter
from hyperinfer.contracts import Envelope, names
from hyperinfer.contracts.quota import v1 as quota_v1
from hyperinfer.quota import handlers
from hyperinfer.quota.errors import MalformedCommand
from hyperinfer.runtime.bus import Bus
from pydantic import BaseModel

QUEUE = "quota"
CommandT = TypeVar("CommandT", bound=BaseModel)


def expect(env: Envelope[Any], model: type[CommandT]) -> CommandT:
    """The command in ``env``, or ``MalformedCommand`` (an error reply) for another type."""
    if not isinstance(env.data, model):
        raise MalformedCommand(f"expected {model.__name__} here, got {env.type}")
    return env.data


async def subscribe(
    bus: Bus, index: Callable[[], QuotaIndex], limiter: QuotaLimiter, *, concurrency: int
) -> None:
    """Answer check, reserve and settle requests (queue group ``quota``)."""

    async def on_check(env: Envelope[Any]) -> BaseModel:
        command = expect(env, quota_v1.ReserveQuota)
        return await handlers.reserve(command, index(), limiter, dry_run=True)

    async def on_reserve(env: Envelope[Any]) -> BaseModel:
        command = expect(env, quota_v1.ReserveQuota)
        return await handlers.reserve(command, index(), limiter, dry_run=False)

    async def on_settle(env: Envelope[Any]) -> BaseModel:
        return await handlers.settle(expect(env, quota_v1.SettleQuota), limiter)

    for subject, handler in (
        (names.QUOTA_CHECK, on_check),
        (names.QUOTA_RESERVE, on_reserve),
        (names.QUOTA_SETTLE, on_settle),
    ):
        await bus.subscribe(subject, handler, queue=QUEUE, concurrency=concurrency)
