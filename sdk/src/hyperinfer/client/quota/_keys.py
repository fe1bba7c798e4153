"""Where the quota state of a team lives in Redis: every key shares the team's hash tag.

::

    hyperinfer:quota:{t:<team>}:rpm:k:<key>       GCRA state "a:r" (TAT = a + r/N us)
    hyperinfer:quota:{t:<team>}:rpm:t             the team's RPM bucket
    hyperinfer:quota:{t:<team>}:tpm:k:<key>       / :tpm:t   the TPM buckets
    hyperinfer:quota:{t:<team>}:budget:k:<key>:<period id>   hash spent, seq, held
    hyperinfer:quota:{t:<team>}:budget:t:<period id>         the team's budget
    hyperinfer:quota:{t:<team>}:res:<request id>  reservation record (hash)
    hyperinfer:quota:{t:<team>}:pending           sorted set: request id -> deadline (us)
    hyperinfer:quota:{t:<team>}:ready             budgets of the team loaded in this Redis

Period ids: ``d20260125`` (UTC day), ``w20260119`` (ISO week, by its Monday),
``m202601`` (UTC month). The reserve script derives them from server time; the
quota service uses ``budget_key`` with the same rules.
"""

from __future__ import annotations

from typing import Literal

from hyperinfer.contracts import names

Scope = Literal["team", "key"]


def rpm_key(team_id: str, key_id: str | None = None) -> str:
    return _scoped(team_id, "rpm", key_id)


def tpm_key(team_id: str, key_id: str | None = None) -> str:
    return _scoped(team_id, "tpm", key_id)


def budget_base(team_id: str, key_id: str | None = None) -> str:
    """The budget hash of a key (or of the team when ``key_id`` is None), minus its period."""
    return _scoped(team_id, "budget", key_id)


def budget_key(team_id: str, scope: Scope, subject_id: str, period_id: str) -> str:
    """The budget hash of one scope for one period id (see ``periods.period_id``)."""
    return budget_base(team_id, subject_id if scope == "key" else None) + ":" + period_id


def reservation_prefix(team_id: str) -> str:
    return names.quota_key(team_id, "res") + ":"


def reservation_key(team_id: str, request_id: str) -> str:
    return reservation_prefix(team_id) + request_id


def pending_key(team_id: str) -> str:
    return names.quota_key(team_id, "pending")


def ready_key(team_id: str) -> str:
    return names.quota_key(team_id, "ready")


def _scoped(team_id: str, kind: str, key_id: str | None) -> str:
    if key_id is None:
        return names.quota_key(team_id, kind, "t")
    return names.quota_key(team_id, kind, "k", key_id)
