"""The config service's pure policy: authorization, validation, versions, the snapshot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hyperinfer.config import domain
from hyperinfer.config.domain import MASTER, GovernanceState, Principal
from hyperinfer.config.errors import BadRequest, Forbidden, InvalidField, PreconditionFailed

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TEAM_A = Principal("key:a", "team-a")


def key_row(**over: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": "k1",
        "key_hash": "h1",
        "team_id": "team-a",
        "user_id": "u1",
        "name": "",
        "scopes": ["admin"],
        "expires_at": None,
        "active": True,
    }
    row.update(over)
    return row


# --- principals ----------------------------------------------------------------------
def test_admin_scoped_key_of_team_admin_administers_its_team() -> None:
    user = {"role": "team_admin", "team_id": "team-a"}
    assert domain.principal_for_key(key_row(), user, NOW) == Principal("key:k1", "team-a")


def test_admin_scoped_key_of_platform_admin_administers_everything() -> None:
    who = domain.principal_for_key(key_row(), {"role": "admin", "team_id": None}, NOW)
    assert who is not None
    assert who.is_platform_admin


@pytest.mark.parametrize(
    ("key", "user"),
    [
        (key_row(scopes=[]), {"role": "team_admin", "team_id": "team-a"}),
        (key_row(), {"role": "member", "team_id": "team-a"}),
        (key_row(), None),
        (key_row(), {"role": "team_admin", "team_id": "team-b"}),
        (key_row(active=False), {"role": "admin", "team_id": None}),
        (key_row(expires_at=NOW - timedelta(seconds=1)), {"role": "admin", "team_id": None}),
    ],
)
def test_other_keys_may_not_administer(key: dict[str, object], user: dict[str, str] | None) -> None:
    assert domain.principal_for_key(key, user, NOW) is None


# --- rights --------------------------------------------------------------------------
def test_team_admin_sees_own_and_global_objects_only() -> None:
    assert domain.can_see(TEAM_A, "team-a")
    assert domain.can_see(TEAM_A, None)
    assert not domain.can_see(TEAM_A, "team-b")
    assert domain.can_see(MASTER, "team-b")


def test_team_admin_writes_only_its_team() -> None:
    domain.require_team(TEAM_A, "team-a", "x")
    with pytest.raises(Forbidden):
        domain.require_team(TEAM_A, "team-b", "x")
    with pytest.raises(Forbidden):
        domain.require_team(TEAM_A, None, "x")
    domain.require_team(MASTER, None, "x")


def test_team_quota_is_the_platforms_key_quota_the_team_admins() -> None:
    domain.require_quota_write(TEAM_A, "key", "team-a")
    with pytest.raises(Forbidden):
        domain.require_quota_write(TEAM_A, "team", "team-a")
    with pytest.raises(Forbidden):
        domain.require_quota_write(TEAM_A, "key", "team-b")
    domain.require_quota_write(MASTER, "team", "team-b")


def test_team_admin_cannot_grant_admin_role() -> None:
    domain.require_role_grant(TEAM_A, "team_admin")
    with pytest.raises(Forbidden):
        domain.require_role_grant(TEAM_A, "admin")


def test_listing_filter_is_forced_to_own_team() -> None:
    assert domain.team_filter(TEAM_A, None) == "team-a"
    assert domain.team_filter(TEAM_A, "team-a") == "team-a"
    with pytest.raises(Forbidden):
        domain.team_filter(TEAM_A, "team-b")
    assert domain.team_filter(MASTER, "team-b") == "team-b"
    assert domain.team_filter(MASTER, None) is None


# --- versions ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("*", None), ('"3"', {3}), ('W/"3"', {3}), ('"3", "4"', {3, 4}), ("5", {5})],
)
def test_if_match_parsing(header: str | None, expected: set[int] | None) -> None:
    assert domain.parse_if_match(header) == expected


def test_malformed_if_match_is_bad_request() -> None:
    with pytest.raises(BadRequest):
        domain.parse_if_match('"abc"')


def test_stale_version_is_precondition_failed() -> None:
    domain.check_version(3, {3})
    domain.check_version(3, None)
    with pytest.raises(PreconditionFailed) as caught:
        domain.check_version(4, {3})
    assert caught.value.extensions == {"current_version": 4}


def test_if_none_match() -> None:
    assert domain.etag_matches('"7"', 7)
    assert domain.etag_matches('W/"6", "7"', 7)
    assert domain.etag_matches("*", 7)
    assert not domain.etag_matches('"6"', 7)
    assert not domain.etag_matches(None, 7)


def test_cursor_round_trip_and_garbage() -> None:
    assert domain.decode_cursor(domain.encode_cursor("team_x")) == "team_x"
    assert domain.decode_cursor(None) is None
    with pytest.raises(BadRequest):
        domain.decode_cursor("\xff\xfe")


# --- validation ----------------------------------------------------------------------
def test_users_other_than_admins_need_a_team() -> None:
    domain.validate_user("admin", None)
    with pytest.raises(InvalidField):
        domain.validate_user("member", None)


def test_soft_limit_above_hard_limit_is_refused() -> None:
    domain.validate_quota({"soft_limit_micros": 5, "budget_micros": 5})
    domain.validate_quota({"soft_limit_micros": 5, "budget_micros": None})
    with pytest.raises(InvalidField):
        domain.validate_quota({"soft_limit_micros": 6, "budget_micros": 5})


@pytest.mark.parametrize(
    ("kind", "url", "ok"),
    [
        ("echo", "", True),
        ("openai_compatible", "", False),
        ("openai_compatible", "http://127.0.0.1:9000/v1", True),
        ("openai", "ftp://x", False),
        ("openai", "https://user:pw@api.example/v1", False),
        ("triton", "not a url", False),
    ],
)
def test_backend_urls(kind: str, url: str, ok: bool) -> None:
    if ok:
        domain.validate_backend(kind, url)
    else:
        with pytest.raises(InvalidField):
            domain.validate_backend(kind, url)


def test_alias_targets_must_exist_and_be_served() -> None:
    backends = {"b": {"id": "b", "models": ["m1"]}, "any": {"id": "any", "models": []}}
    domain.validate_targets([{"backend_id": "b", "model": "m1"}], backends)
    domain.validate_targets([{"backend_id": "any", "model": "whatever"}], backends)
    with pytest.raises(InvalidField, match="no backend"):
        domain.validate_targets([{"backend_id": "nope", "model": "m1"}], backends)
    with pytest.raises(InvalidField, match="does not serve"):
        domain.validate_targets([{"backend_id": "b", "model": "m2"}], backends)


def test_expiry_must_be_in_the_future() -> None:
    domain.validate_expiry(None, NOW)
    domain.validate_expiry(NOW + timedelta(days=1), NOW)
    with pytest.raises(InvalidField):
        domain.validate_expiry(NOW, NOW)


def test_public_views_hide_secrets() -> None:
    key = domain.public("key", {"id": "k", "key_hash": "h", "key_prefix": "hi-abc…wxyz"})
    assert key == {"id": "k", "key_hint": "hi-abc…wxyz"}
    backend = domain.public("backend", {"id": "b", "credentials_ciphertext": "hic1.x.y"})
    assert backend == {"id": "b", "has_credentials": True}


# --- the snapshot --------------------------------------------------------------------
def state() -> GovernanceState:
    team = {"id": "t", "name": "T", "failure_policy": "closed", "budget_micros": 9_000_000}
    backend = {
        "id": "echo",
        "name": "echo",
        "kind": "echo",
        "base_url": "",
        "models": ["echo"],
        "weight": 1.0,
        "tags": [],
        "timeout_s": 60.0,
        "credentials_ciphertext": "hic1.k.sealed",
    }
    targets = [{"backend_id": "echo", "model": "echo"}]
    return GovernanceState(
        version=12,
        price_version=7,
        teams=[team],
        keys=[
            key_row(id="live", key_hash="h-live", scopes=[]),
            key_row(id="old", key_hash="h-old", expires_at=NOW - timedelta(seconds=1)),
        ],
        aliases=[
            {"name": "chat", "team_id": "t", "targets": targets},
            {"name": "chat", "team_id": None, "targets": targets},
        ],
        quotas=[
            {
                "scope": "key",
                "subject_id": "live",
                "team_id": "t",
                "rpm": 10,
                "tpm": None,
                "budget_micros": None,
                "soft_limit_micros": None,
                "grace_micros": 0,
                "budget_period": "daily",
            }
        ],
        backends=[backend],
        prices=[{"model": "echo", "input_per_mtok_micros": 1, "output_per_mtok_micros": 2}],
        rules=[{"name": "default", "alias": None, "strategy": "score", "weights": {"gpu": 1.0}}],
    )


def test_snapshot_carries_hashes_ciphertext_and_the_salt() -> None:
    snap = domain.build_snapshot(state(), "salt-1", NOW)
    assert snap.version == 12
    assert snap.key_hash_salt == "salt-1"
    assert snap.key_hash_scheme == "hmac-sha256"
    assert set(snap.keys) == {"h-live"}  # expired keys are left out
    assert snap.keys["h-live"].team_id == "team-a"
    assert snap.backends["echo"].credentials_ciphertext == "hic1.k.sealed"
    assert snap.price_version == "7"
    assert snap.prices["echo"].output_per_mtok_micros == 2
    assert snap.routing_rules[0].weights == {"gpu": 1.0}


def test_snapshot_lists_global_alias_before_team_alias_of_the_same_name() -> None:
    snap = domain.build_snapshot(state(), "salt-1", NOW)
    assert [(a.name, a.team_id) for a in snap.aliases] == [("chat", None), ("chat", "t")]


def test_team_budget_becomes_the_team_quota_hard_limit() -> None:
    snap = domain.build_snapshot(state(), "salt-1", NOW)
    team_quota = next(q for q in snap.quotas if q.scope == "team")
    assert (team_quota.subject_id, team_quota.budget_micros) == ("t", 9_000_000)
    assert snap.teams["t"].budget_micros == 9_000_000
    s = state()
    s.quotas.append({**s.quotas[0], "scope": "team", "subject_id": "t", "budget_micros": None})
    quotas = [q for q in domain.build_snapshot(s, "x" * 8, NOW).quotas if q.scope == "team"]
    assert len(quotas) == 1
    assert quotas[0].budget_micros == 9_000_000
    assert quotas[0].rpm == 10


@pytest.mark.parametrize(
    ("key", "user", "scope"),
    [
        (key_row(), {"id": "u1", "role": "admin", "team_id": None}, "platform"),
        (key_row(), {"id": "u1", "role": "team_admin", "team_id": "team-a"}, "team"),
        (key_row(), {"id": "u1", "role": "member", "team_id": "team-a"}, None),
        (key_row(), {"id": "u1", "role": "team_admin", "team_id": "team-b"}, None),
        (key_row(scopes=["chat"]), {"id": "u1", "role": "admin", "team_id": None}, None),
        (key_row(user_id=None), None, None),
    ],
)
def test_snapshot_keys_say_what_they_may_administer(
    key: dict[str, object], user: dict[str, object] | None, scope: str | None
) -> None:
    s = state()
    s.keys = [key]
    s.users = [user] if user is not None else []
    snap = domain.build_snapshot(s, "salt-1", NOW)
    assert snap.keys["h1"].admin_scope == scope
    assert domain.admin_scope(key, user, NOW) == scope
