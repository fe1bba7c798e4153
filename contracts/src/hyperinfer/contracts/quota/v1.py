"""Quota contracts v1: commands and replies for non-Python clients, and alert events."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

EVENT_THRESHOLD_CROSSED = "quota.threshold_crossed"
EVENT_EXHAUSTED = "quota.exhausted"
EVENT_POLICY_SWITCHED = "quota.policy_switched"
COMMAND_CHECK = "quota.check"
COMMAND_RESERVE = "quota.reserve"
COMMAND_SETTLE = "quota.settle"

DenyReason = Literal["rpm", "tpm", "budget", "redis_unavailable", "unknown_key"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ReserveQuota(_Model):
    """Reserve (or with ``dry_run`` only check) one request's share of every limit."""

    request_id: str = Field(min_length=1, max_length=128)
    team_id: str
    key_id: str
    tokens: int = Field(ge=0, description="prompt estimate + max_tokens")
    cost_micros: int = Field(ge=0)
    dry_run: bool = False


class SettleQuota(_Model):
    """Refund the difference between what was reserved and what was used."""

    request_id: str = Field(min_length=1, max_length=128)
    team_id: str
    key_id: str
    actual_tokens: int = Field(ge=0)
    actual_cost_micros: int = Field(ge=0)


class QuotaDecision(_Model):
    """The answer to a reserve/check: allowed, or why not and how long to wait."""

    allowed: bool
    reason: DenyReason | None = None
    retry_after_ms: int = Field(default=0, ge=0)
    never: bool = Field(
        default=False, description="no wait admits this request at the current limits"
    )
    limit_requests: int | None = None
    remaining_requests: int | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_requests_ms: int | None = None
    reset_tokens_ms: int | None = None
    budget_remaining_micros: int | None = None


class SettleResult(_Model):
    settled: bool
    refunded_tokens: int = 0
    refunded_cost_micros: int = 0


class QuotaThresholdCrossed(_Model):
    scope: Literal["team", "key"]
    subject_id: str
    team_id: str
    period: Literal["daily", "weekly", "monthly"]
    period_start: AwareDatetime
    threshold_pct: int = Field(ge=0, le=1000)
    spent_micros: int = Field(ge=0)
    limit_micros: int = Field(ge=0)


class QuotaExhausted(_Model):
    scope: Literal["team", "key"]
    subject_id: str
    team_id: str
    period: Literal["daily", "weekly", "monthly"]
    period_start: AwareDatetime
    spent_micros: int = Field(ge=0)
    limit_micros: int = Field(ge=0)
    hard: bool = True


class QuotaPolicySwitched(_Model):
    node: str
    team_id: str | None = None
    mode: Literal["redis", "fail_open_local", "fail_closed"]
    reason: str = ""
