"""QuotaIndex: limits per (team, key) from a snapshot, and what ships in the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import hyperinfer.client.quota as quota
from hyperinfer.client.quota import QuotaIndex, budget_rule, gcra_params

from .conftest import index_of, key_quota, make_snapshot, team_quota

SDK = Path(__file__).resolve().parents[2]


def test_key_and_team_limits_and_policy() -> None:
    index = index_of(
        key_quota(rpm=10, tpm=1000),
        team_quota(rpm=100, budget_micros=5_000, budget_period="weekly"),
        policies={"t1": "open"},
    )
    limits = index.limits("t1", "k1")
    assert limits.fail_open
    assert limits.rpm == (10, 100)
    assert limits.tpm == (1000, None)
    assert limits.budget[0] is None
    assert limits.budget[1] is not None
    assert limits.budget[1].cap_micros == 5_000
    spec = limits.spec.decode().split()
    assert tuple(map(int, spec[:3])) == gcra_params(10)
    assert spec[9:12] == ["-1", "1", "0"]  # no team TPM
    assert spec[12:] == ["-1", "m", "5000", "w"]
    assert all(b"{t:t1}" in key for key in limits.keys)
    assert index.limits("t1", "k1") is limits  # built once per snapshot
    assert index.knows("t1", "k1")
    assert not index.knows("t1", "other")


def test_unknown_key_gets_team_limits_and_unknown_team_fails_closed() -> None:
    index = index_of(team_quota(rpm=5))
    assert index.limits("t1", "stranger").rpm == (None, 5)
    nobody = index.limits("nobody", "k")
    assert not nobody.fail_open
    assert nobody.rpm == (None, None)
    assert not nobody.has_budget


def test_duplicate_quotas_keep_the_stricter_value() -> None:
    index = index_of(
        key_quota(rpm=10, tpm=None, budget_micros=900),
        key_quota(rpm=20, tpm=50, budget_micros=100),
    )
    limits = index.limits("t1", "k1")
    assert limits.rpm == (10, None)
    assert limits.tpm == (50, None)
    assert limits.budget[0] is not None
    assert limits.budget[0].cap_micros == 100


def test_soft_limit_with_grace_and_hard_limit() -> None:
    soft = budget_rule(key_quota(soft_limit_micros=1_000, grace_micros=200))
    assert soft is not None
    assert (soft.cap_micros, soft.alert_limit_micros, soft.hard) == (1_200, 1_000, False)
    both = budget_rule(key_quota(budget_micros=1_100, soft_limit_micros=1_000, grace_micros=200))
    assert both is not None
    assert (both.cap_micros, both.alert_limit_micros, both.hard) == (1_100, 1_000, True)
    hard = budget_rule(key_quota(budget_micros=500))
    assert hard is not None
    assert (hard.cap_micros, hard.alert_limit_micros, hard.hard) == (500, 500, True)
    assert budget_rule(key_quota(rpm=5)) is None


def test_budget_rules_and_teams_for_the_service() -> None:
    snapshot = make_snapshot(
        [key_quota(budget_micros=5), team_quota("t2", budget_micros=7)], keys={"k1": "t1"}
    )
    index = QuotaIndex.from_snapshot(snapshot)
    assert sorted((r.scope, r.subject_id) for r in index.budget_rules()) == [
        ("key", "k1"),
        ("team", "t2"),
    ]
    assert index.team_ids() == ["t1", "t2"]
    assert index.version == 1


def test_public_surface() -> None:
    for name in ("QuotaIndex", "QuotaLimiter", "Limits", "Reservation", "QuotaMetrics"):
        assert name in quota.__all__
    assert sorted(quota.__all__) == sorted(set(quota.__all__))


def test_lua_scripts_ship_in_the_wheel(tmp_path: Path) -> None:
    subprocess.run(
        ["uv", "build", "--wheel", "--out-dir", str(tmp_path), str(SDK)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for script in ("reserve", "settle", "sweep", "post", "load", "nodes"):
        assert f"hyperinfer/client/quota/{script}.lua" in names
    assert sys.version_info >= (3, 11)
