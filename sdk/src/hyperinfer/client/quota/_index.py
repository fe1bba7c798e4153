"""Per-snapshot quota lookups: everything the reserve script needs, computed once.

``QuotaIndex.from_snapshot`` turns the config snapshot's quotas into one ``Limits``
per (team, key): the Redis keys and the script arguments, ready to send. The hot
path does a dict lookup and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

from hyperinfer.client.quota import _keys
from hyperinfer.client.quota._periods import PERIOD_CODES
from hyperinfer.contracts.config.v1 import ConfigSnapshot, QuotaConfig

WINDOW_US = 60_000_000  # RPM and TPM are per minute
_MAX_PRODUCT = 2**49  # capacity * period units stay exact in a Lua double (2^53)
NO_LIMIT: tuple[int, int, int] = (-1, 1, 0)


def gcra_params(limit: int | None, window_us: int = WINDOW_US) -> tuple[int, int, int]:
    """``(N, P, C)`` for the script: one unit costs P/N us, the bucket holds C units.

    The rate ``limit / window`` is reduced by gcd so the arithmetic stays exact;
    a limit so large and odd that ``C * P`` would leave 2^49 is rounded to the
    nearest representable rate (relative error below 1e-7).
    """
    if limit is None:
        return NO_LIMIT
    if limit == 0:
        return (0, 1, 0)
    g = gcd(limit, window_us)
    rate, period = limit // g, window_us // g
    if limit * period >= _MAX_PRODUCT:
        period = max(1, _MAX_PRODUCT // (2 * limit))
        rate = max(1, round(limit * period / window_us))
        g = gcd(rate, period)
        rate, period = rate // g, period // g
    return (rate, period, limit)


@dataclass(frozen=True, slots=True)
class BudgetRule:
    """One configured budget: what the quota service rolls up, loads and alerts on."""

    scope: _keys.Scope
    subject_id: str
    team_id: str
    period: str
    cap_micros: int
    alert_limit_micros: int
    hard: bool

    @property
    def key_id(self) -> str | None:
        return self.subject_id if self.scope == "key" else None


@dataclass(frozen=True, slots=True)
class Limits:
    """The key's and its team's limits, as the reserve script takes them.

    ``keys`` and ``res_prefix`` are pre-encoded and ``spec`` carries every number in
    one string: packing a command costs the client per argument, on every request.
    """

    team_id: str
    key_id: str
    fail_open: bool
    keys: tuple[bytes, ...]
    res_prefix: bytes
    spec: bytes
    rpm: tuple[int | None, int | None]
    tpm: tuple[int | None, int | None]
    budget: tuple[BudgetRule | None, BudgetRule | None]

    @property
    def has_budget(self) -> bool:
        return self.budget[0] is not None or self.budget[1] is not None

    @property
    def policy(self) -> str:
        return "open" if self.fail_open else "closed"


@dataclass(frozen=True, slots=True)
class _Merged:
    rpm: int | None = None
    tpm: int | None = None
    budget: BudgetRule | None = None


class QuotaIndex:
    """O(1) ``Limits`` by (team, key) for one config snapshot."""

    def __init__(
        self,
        version: int,
        by_key: dict[tuple[str, str], Limits],
        teams: dict[str, _Merged],
        keys: dict[str, _Merged],
        fail_open: dict[str, bool],
    ) -> None:
        self.version = version
        self._by_key = by_key
        self._teams = teams
        self._keys = keys
        self._fail_open = fail_open

    @classmethod
    def from_snapshot(cls, snapshot: ConfigSnapshot) -> QuotaIndex:
        teams: dict[str, _Merged] = {}
        keys: dict[str, _Merged] = {}
        for quota in snapshot.quotas:
            table = teams if quota.scope == "team" else keys
            table[quota.subject_id] = _merge(table.get(quota.subject_id), quota)
        fail_open = {t.id: t.failure_policy == "open" for t in snapshot.teams.values()}
        index = cls(snapshot.version, {}, teams, keys, fail_open)
        for key in snapshot.keys.values():
            index._by_key[(key.team_id, key.id)] = index._build(key.team_id, key.id)
        return index

    def limits(self, team_id: str, key_id: str) -> Limits:
        """The limits of ``key_id`` in ``team_id`` (team limits only for a key not in the
        snapshot; no limits and fail-closed for an unknown team)."""
        found = self._by_key.get((team_id, key_id))
        return found if found is not None else self._build(team_id, key_id)

    def knows(self, team_id: str, key_id: str) -> bool:
        """True when the snapshot has this key in this team."""
        return (team_id, key_id) in self._by_key

    def team_ids(self) -> list[str]:
        """Every team with a config entry or a quota."""
        found = set(self._fail_open) | {k[0] for k in self._by_key}
        found |= {rule.team_id for rule in self.budget_rules()}
        return sorted(found)

    def budget_rules(self) -> list[BudgetRule]:
        """Every configured budget, team and key scope."""
        merged = (*self._teams.values(), *self._keys.values())
        return [m.budget for m in merged if m.budget is not None]

    def _build(self, team_id: str, key_id: str) -> Limits:
        team = self._teams.get(team_id, _Merged())
        key = self._keys.get(key_id, _Merged())
        if key.budget is not None and key.budget.team_id != team_id:
            key = _Merged(key.rpm, key.tpm, None)  # a key quota recorded for another team
        spec: list[int | str] = []
        for limit in (key.rpm, team.rpm, key.tpm, team.tpm):
            spec.extend(gcra_params(limit))
        for rule in (key.budget, team.budget):
            spec.extend(
                (rule.cap_micros, PERIOD_CODES[rule.period]) if rule is not None else (-1, "m")
            )
        keys = (
            _keys.rpm_key(team_id, key_id),
            _keys.rpm_key(team_id),
            _keys.tpm_key(team_id, key_id),
            _keys.tpm_key(team_id),
            _keys.budget_base(team_id, key_id),
            _keys.budget_base(team_id),
            _keys.ready_key(team_id),
            _keys.pending_key(team_id),
        )
        return Limits(
            team_id=team_id,
            key_id=key_id,
            fail_open=self._fail_open.get(team_id, False),
            keys=tuple(k.encode() for k in keys),
            res_prefix=_keys.reservation_prefix(team_id).encode(),
            spec=" ".join(map(str, spec)).encode(),
            rpm=(key.rpm, team.rpm),
            tpm=(key.tpm, team.tpm),
            budget=(key.budget, team.budget),
        )


def budget_rule(quota: QuotaConfig) -> BudgetRule | None:
    """The budget a quota sets: hard limit, soft limit plus grace, whichever is lower."""
    caps = [c for c in (quota.budget_micros, _soft_cap(quota)) if c is not None]
    if not caps:
        return None
    cap = min(caps)
    alert = quota.soft_limit_micros if quota.soft_limit_micros is not None else cap
    return BudgetRule(
        scope=quota.scope,
        subject_id=quota.subject_id,
        team_id=quota.team_id,
        period=quota.budget_period,
        cap_micros=cap,
        alert_limit_micros=alert,
        hard=quota.budget_micros is not None and quota.budget_micros == cap,
    )


def _soft_cap(quota: QuotaConfig) -> int | None:
    if quota.soft_limit_micros is None:
        return None
    return quota.soft_limit_micros + quota.grace_micros


def _merge(current: _Merged | None, quota: QuotaConfig) -> _Merged:
    """Two quotas for one subject: the stricter value of each field wins."""
    rule = budget_rule(quota)
    if current is None:
        return _Merged(quota.rpm, quota.tpm, rule)
    if current.budget is not None and (rule is None or current.budget.cap_micros < rule.cap_micros):
        rule = current.budget
    return _Merged(_min(current.rpm, quota.rpm), _min(current.tpm, quota.tpm), rule)


def _min(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else min(a, b)
