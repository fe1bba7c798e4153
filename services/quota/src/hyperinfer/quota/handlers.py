"""The request/reply API for clients that are not Python: contract in, contract out.

The same reserve script as the data plane, through this replica's ``QuotaLimiter``
(so the failure policy applies here too). A key the config does not know in that
team is refused with ``unknown_key``; Redis down for a fail-closed team answers
``redis_unavailable``.
"""

from __future__ import annotations

from hyperinfer.client.errors import QuotaUnavailable
from hyperinfer.client.quota import QuotaExceeded, QuotaIndex, QuotaLimiter
from hyperinfer.contracts.quota import v1 as quota_v1

UNAVAILABLE_RETRY_MS = 1000


async def reserve(
    command: quota_v1.ReserveQuota, index: QuotaIndex, limiter: QuotaLimiter, *, dry_run: bool
) -> quota_v1.QuotaDecision:
    """Reserve (or, ``dry_run``, only check) one request's share of every limit."""
    if not index.knows(command.team_id, command.key_id):
        return quota_v1.QuotaDecision(allowed=False, reason="unknown_key")
    limits = index.limits(command.team_id, command.key_id)
    try:
        if dry_run or command.dry_run:
            res = await limiter.check(
                request_id=command.request_id,
                tokens=command.tokens,
                cost_micros=command.cost_micros,
                limits=limits,
            )
        else:
            res = await limiter.reserve(
                request_id=command.request_id,
                team_id=command.team_id,
                key_id=command.key_id,
                tokens=command.tokens,
                cost_micros=command.cost_micros,
                limits=limits,
            )
    except QuotaExceeded as exc:
        return decision(exc.reply, reason=exc.reason, never=exc.never)  # type: ignore[arg-type]
    except QuotaUnavailable:
        return quota_v1.QuotaDecision(
            allowed=False, reason="redis_unavailable", retry_after_ms=UNAVAILABLE_RETRY_MS
        )
    return decision(res.reply)


async def settle(command: quota_v1.SettleQuota, limiter: QuotaLimiter) -> quota_v1.SettleResult:
    """Refund the difference between the reservation and what the request used."""
    settled, tokens, cost = await limiter.settle_request(
        command.team_id, command.request_id, command.actual_tokens, command.actual_cost_micros
    )
    return quota_v1.SettleResult(settled=settled, refunded_tokens=tokens, refunded_cost_micros=cost)


def decision(
    reply: list[int], *, reason: quota_v1.DenyReason | None = None, never: bool = False
) -> quota_v1.QuotaDecision:
    """A ``QuotaDecision`` from a reserve script reply (see ``reserve.lua``)."""
    allowed = reason is None

    def known(at: int) -> int | None:
        return reply[at] if reply[at] >= 0 else None

    def reset_ms(limit_at: int) -> int | None:
        return -(-reply[limit_at + 2] // 1000) if reply[limit_at] >= 0 else None

    return quota_v1.QuotaDecision(
        allowed=allowed,
        reason=reason,
        retry_after_ms=0 if allowed or never else -(-max(0, reply[2]) // 1000),
        never=never,
        limit_requests=known(4),
        remaining_requests=max(0, reply[5]) if reply[4] >= 0 else None,
        reset_requests_ms=reset_ms(4),
        limit_tokens=known(7),
        remaining_tokens=max(0, reply[8]) if reply[7] >= 0 else None,
        reset_tokens_ms=reset_ms(7),
        budget_remaining_micros=known(10),
    )
