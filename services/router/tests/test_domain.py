"""Scoring, ejection, staleness fallback and the table: the pure domain."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import pytest
from hyperinfer.contracts.config.v1 import (
    AliasConfig,
    AliasTarget,
    BackendConfig,
    ConfigSnapshot,
    RoutingRule,
)
from hyperinfer.contracts.routing.v1 import RouteCandidate, RoutingTablePublished
from hyperinfer.router.domain import (
    DEFAULT_WEIGHTS,
    AliasDecision,
    CandidateView,
    HealthRecord,
    Inputs,
    Policy,
    candidates_for,
    decide_alias,
    decide_table,
    ewma,
    factors,
    material_change,
    observe_health,
    pick,
    rule_for,
    score,
    to_table,
    weights_for,
)

NOW = datetime(2026, 1, 2, tzinfo=UTC)
POLICY = Policy()
ALIAS = AliasConfig(
    name="chat", targets=[AliasTarget(backend_id=b, model="m") for b in ("a", "b", "c")]
)


def fresh(backend: str, model: str = "m", **inputs: float | None) -> CandidateView:
    return CandidateView(
        backend, model, freshness="fresh", state_age_s=0.1, inputs=Inputs(**inputs)
    )


def weights_of(decision: AliasDecision) -> dict[str, float]:
    return {c.view.backend_id: c.weight for c in decision.candidates}


# --- factors and score ---------------------------------------------------------------
def test_an_idle_healthy_candidate_scores_one() -> None:
    value, components = score(
        Inputs(
            queue=0,
            kv_cache=0,
            gpu_utilization=0,
            gpu_memory_free=1,
            error_rate=0,
            availability=1,
            latency_ms=100,
        ),
        DEFAULT_WEIGHTS,
        100,
        POLICY,
    )
    assert value == pytest.approx(1.0)
    assert [c.name for c in components] == list(DEFAULT_WEIGHTS)


def test_unknown_inputs_are_neutral() -> None:
    value, components = score(Inputs(), DEFAULT_WEIGHTS, None, POLICY)
    assert value == 1.0
    assert all(c.factor == 1.0 and c.input is None for c in components)


@pytest.mark.parametrize(
    ("component", "better", "worse"),
    [
        ("queue", {"queue": 0}, {"queue": 8}),
        ("gpu_utilization", {"gpu_utilization": 0.1}, {"gpu_utilization": 0.95}),
        ("gpu_memory", {"gpu_memory_free": 0.8}, {"gpu_memory_free": 0.05}),
        ("kv_cache", {"kv_cache": 0.2}, {"kv_cache": 0.99}),
        ("error_rate", {"error_rate": 0.0}, {"error_rate": 0.3}),
        ("history", {"availability": 1.0}, {"availability": 0.2}),
        ("latency", {"latency_ms": 100}, {"latency_ms": 400}),
    ],
)
def test_each_component_lowers_the_score_when_its_input_worsens(
    component: str, better: dict[str, float], worse: dict[str, float]
) -> None:
    good, _ = score(Inputs(**better), DEFAULT_WEIGHTS, 100, POLICY)
    bad, parts = score(Inputs(**worse), DEFAULT_WEIGHTS, 100, POLICY)
    assert bad < good
    assert next(c for c in parts if c.name == component).factor < 1


def test_factor_values_match_the_documented_formulas() -> None:
    f = factors(
        Inputs(
            queue=3,
            gpu_utilization=0.5,
            gpu_memory_free=0.5,
            kv_cache=0.5,
            error_rate=0.05,
            availability=0.5,
            latency_ms=200,
        ),
        100,
        POLICY,
    )
    assert f == pytest.approx(
        {
            "queue": 0.25,
            "gpu_utilization": 0.55,
            "gpu_memory": 0.55,
            "kv_cache": 0.55,
            "error_rate": 0.5,
            "history": 0.55,
            "latency": 0.6,  # (100 + 50) / (200 + 50)
        }
    )


def test_factors_are_bounded_and_survive_garbage_inputs() -> None:
    f = factors(
        Inputs(queue=-5, gpu_utilization=7, kv_cache=float("nan"), error_rate=2, latency_ms=1e9),
        1,
        POLICY,
    )
    assert f["queue"] == 1.0
    assert f["gpu_utilization"] == pytest.approx(0.1)
    assert f["kv_cache"] is None
    assert f["latency"] == 0.01
    assert all(v is None or 0.01 <= v <= 1 for v in f.values())


def test_a_zero_weight_switches_a_component_off() -> None:
    weights = {**DEFAULT_WEIGHTS, "queue": 0.0}
    value, _ = score(Inputs(queue=100), weights, None, POLICY)
    assert value == 1.0


# --- rules -------------------------------------------------------------------------
def test_the_rule_naming_the_alias_wins_over_the_default_rule() -> None:
    rules = [
        RoutingRule(name="default", strategy="weighted"),
        RoutingRule(name="x", alias="chat", strategy="ordered"),
    ]
    assert rule_for("chat", rules) is rules[1]
    assert rule_for("other", rules) is rules[0]
    assert rule_for("other", []) is None


def test_rule_weights_override_defaults_and_bad_ones_are_noted() -> None:
    rule = RoutingRule(
        name="r", weights={"queue": 3.0, "latency": -1, "vibes": 2.0, "history": float("nan")}
    )
    weights, notes = weights_for(rule, DEFAULT_WEIGHTS)
    assert weights["queue"] == 3.0
    assert weights["latency"] == DEFAULT_WEIGHTS["latency"]
    assert weights["history"] == DEFAULT_WEIGHTS["history"]
    assert "vibes" not in weights
    assert len(notes) == 3


# --- one alias -------------------------------------------------------------------------
def test_a_deep_queue_takes_traffic_away_and_weights_sum_to_one() -> None:
    decision = decide_alias(
        ALIAS, [fresh("a", queue=0), fresh("b", queue=0), fresh("c", queue=9)], None, POLICY
    )
    w = weights_of(decision)
    assert decision.mode == "score"
    assert w["a"] == pytest.approx(w["b"])
    assert w["c"] < w["a"] / 5
    assert sum(w.values()) == pytest.approx(1.0, abs=1e-5)


def test_static_weights_scale_the_scores() -> None:
    views = [
        CandidateView("a", "m", static_weight=3, freshness="fresh"),
        CandidateView("b", "m", static_weight=1, freshness="fresh"),
        CandidateView("c", "m", static_weight=0, freshness="fresh"),
    ]
    w = weights_of(decide_alias(ALIAS, views, None, POLICY))
    assert w == {"a": 0.75, "b": 0.25, "c": 0.0}


def test_unhealthy_unknown_and_not_ready_candidates_are_ejected_with_reasons() -> None:
    views = [
        fresh("a"),
        CandidateView("b", "m", freshness="fresh", ejected_reason="unhealthy: refused"),
        CandidateView("c", "m", known=False),
    ]
    decision = decide_alias(ALIAS, views, None, POLICY)
    by_id = {c.view.backend_id: c for c in decision.candidates}
    assert weights_of(decision) == {"a": 1.0, "b": 0.0, "c": 0.0}
    assert by_id["b"].ejected
    assert by_id["b"].reason == "ejected: unhealthy: refused"
    assert by_id["c"].reason is not None
    assert "unknown backend" in by_id["c"].reason


def test_stale_candidates_are_ejected_while_enough_fresh_ones_remain() -> None:
    views = [fresh("a"), fresh("b"), CandidateView("c", "m", freshness="stale", state_age_s=12.0)]
    decision = decide_alias(ALIAS, views, None, POLICY)
    assert decision.mode == "score"
    assert weights_of(decision)["c"] == 0.0
    assert decision.candidates[2].reason == "ejected: stale state (12.0s old)"


def test_stale_state_falls_back_to_static_weights_never_one_backend() -> None:
    views = [
        CandidateView("a", "m", static_weight=2, freshness="stale", inputs=Inputs(queue=0)),
        CandidateView("b", "m", static_weight=1, freshness="fresh", inputs=Inputs(queue=0)),
        CandidateView("c", "m", static_weight=1, freshness="stale", inputs=Inputs(queue=50)),
    ]
    decision = decide_alias(ALIAS, views, None, POLICY)
    assert decision.mode == "static"
    assert decision.static_fallback
    assert weights_of(decision) == {"a": 0.5, "b": 0.25, "c": 0.25}
    assert all(c.reason == "static: state stale" for c in decision.candidates)
    assert decision.notes


def test_all_stale_is_static_too_and_dead_ones_stay_ejected() -> None:
    views = [
        CandidateView("a", "m", freshness="stale"),
        CandidateView("b", "m", freshness="stale"),
        CandidateView("c", "m", freshness="stale", ejected_reason="unhealthy: x"),
    ]
    decision = decide_alias(ALIAS, views, None, POLICY)
    assert decision.mode == "static"
    assert weights_of(decision) == {"a": 0.5, "b": 0.5, "c": 0.0}


def test_unmonitored_candidates_are_scored_neutral_not_stale() -> None:
    views = [CandidateView("a", "m"), CandidateView("b", "m"), CandidateView("c", "m")]
    decision = decide_alias(ALIAS, views, None, POLICY)
    assert decision.mode == "score"
    assert list(weights_of(decision).values()) == pytest.approx([1 / 3] * 3, abs=1e-5)


def test_every_candidate_ejected_panics_to_static_weights() -> None:
    views = [
        CandidateView("a", "m", freshness="fresh", ejected_reason="unhealthy: x"),
        CandidateView("b", "m", freshness="fresh", ejected_reason="unhealthy: y"),
        CandidateView("c", "m", known=False),
    ]
    decision = decide_alias(ALIAS, views, None, POLICY)
    assert decision.mode == "panic"
    assert weights_of(decision) == {"a": 0.5, "b": 0.5, "c": 0.0}
    assert [c.ejected for c in decision.candidates] == [False, False, True]
    assert decision.candidates[0].reason == "panic: every candidate ejected; this one: unhealthy: x"
    table = to_table([decision], 1, 1, NOW)
    assert [c.healthy for c in table.aliases["chat"]] == [True, True, False]


def test_ordered_strategy_sends_everything_to_the_first_live_target() -> None:
    rule = RoutingRule(name="r", alias="chat", strategy="ordered")
    views = [
        CandidateView("a", "m", freshness="fresh", ejected_reason="unhealthy"),
        fresh("b", queue=50),
        fresh("c"),
    ]
    assert weights_of(decide_alias(ALIAS, views, rule, POLICY)) == {"a": 0, "b": 1, "c": 0}


def test_weighted_strategy_ignores_load_but_not_health() -> None:
    rule = RoutingRule(name="r", strategy="weighted")
    views = [
        fresh("a", queue=50),
        fresh("b"),
        CandidateView("c", "m", freshness="fresh", ejected_reason="unhealthy"),
    ]
    decision = decide_alias(ALIAS, views, rule, POLICY)
    assert decision.mode == "weighted"
    assert weights_of(decision) == {"a": 0.5, "b": 0.5, "c": 0.0}


def test_latency_is_relative_to_the_fastest_candidate() -> None:
    views = [fresh("a", latency_ms=100), fresh("b", latency_ms=400), fresh("c")]
    w = weights_of(decide_alias(ALIAS, views, None, POLICY))
    assert w["a"] == pytest.approx(w["c"])
    assert w["b"] == pytest.approx(w["a"] * 150 / 450, rel=1e-3)


def test_a_few_milliseconds_apart_is_nearly_a_tie() -> None:
    views = [fresh("a", latency_ms=1), fresh("b", latency_ms=10), fresh("c", latency_ms=10)]
    w = weights_of(decide_alias(ALIAS, views, None, POLICY))
    assert w["b"] / w["a"] == pytest.approx(51 / 60, rel=1e-3)
    strict = Policy(latency_slack_ms=0)
    w = weights_of(decide_alias(ALIAS, views, None, strict))
    assert w["b"] / w["a"] == pytest.approx(0.1, rel=1e-3)


# --- health ----------------------------------------------------------------------------
def test_unhealthy_ejects_at_once_and_half_open_needs_n_good_reports() -> None:
    record = observe_health(None, True, None, 0.0, 3, 30)
    assert not record.ejected
    record = observe_health(record, False, "refused", 1.0, 3, 30)
    assert (record.ejected, record.reason) == (True, "unhealthy: refused")
    record = observe_health(record, True, None, 2.0, 3, 30)
    assert (record.ejected, record.reason) == (True, "recovering: 1/3 healthy reports")
    record = observe_health(record, False, None, 3.0, 3, 30)  # relapse: start over
    record = observe_health(record, True, None, 4.0, 3, 30)
    record = observe_health(record, True, None, 5.0, 3, 30)
    assert record.ejected
    record = observe_health(record, True, None, 6.0, 3, 30)
    assert (record.ejected, record.reason) == (False, None)


def test_availability_history_drops_on_failure_and_recovers_slowly() -> None:
    record = HealthRecord(availability=1.0, updated_at=0.0)
    record = observe_health(record, False, None, 30.0, 1, 30.0)
    assert record.availability == pytest.approx(1 / 2.718281828, rel=1e-3)
    record = observe_health(record, True, None, 31.0, 1, 30.0)
    assert 0.37 < record.availability < 0.4


def test_ewma_is_time_based() -> None:
    assert ewma(None, 5.0, 1.0, 10.0) == 5.0
    assert ewma(0.0, 10.0, 0.0, 10.0) == 0.0
    assert ewma(0.0, 10.0, 1e6, 10.0) == pytest.approx(10.0)


# --- the table -------------------------------------------------------------------------
def snapshot(rules: list[RoutingRule] | None = None) -> ConfigSnapshot:
    backends = {b: BackendConfig(id=b, name=b, kind="openai_compatible") for b in "abc"}
    return ConfigSnapshot(
        version=7,
        generated_at=NOW,
        backends=backends,
        aliases=[
            ALIAS,
            AliasConfig(
                name="chat", team_id="t1", targets=[AliasTarget(backend_id="c", model="m2")]
            ),
        ],
        routing_rules=rules or [],
    )


def test_table_holds_global_and_team_aliases_and_config_version() -> None:
    decisions = decide_table(snapshot(), lambda b, m: fresh(b, m), POLICY)
    table = to_table(decisions, version=3, config_version=7, generated_at=NOW)
    assert table.version == 3
    assert table.config_version == 7
    assert [c.backend_id for c in table.aliases["chat"]] == ["a", "b", "c"]
    assert table.team_aliases["t1"]["chat"][0].model == "m2"
    assert table.team_aliases["t1"]["chat"][0].weight == 1.0
    assert candidates_for(table, "chat", "t1") == table.team_aliases["t1"]["chat"]
    assert candidates_for(table, "chat", "t2") == table.aliases["chat"]
    assert candidates_for(table, "nope") is None
    assert table.static_fallback is False


def test_table_flags_static_fallback_aliases() -> None:
    stale = lambda b, m: CandidateView(b, m, freshness="stale")  # noqa: E731
    table = to_table(decide_table(snapshot(), stale, POLICY), 1, 7, NOW)
    assert table.static_fallback is True
    assert table.fallback_aliases == ["chat", "t1/chat"]
    assert table.team_aliases["t1"]["chat"][0].weight == 1.0


def table_with(
    weights: list[float], healthy: bool = True, config_version: int = 1
) -> RoutingTablePublished:
    cands = [
        RouteCandidate(backend_id=b, model="m", weight=w, healthy=healthy)
        for b, w in zip("abc", weights, strict=False)
    ]
    return RoutingTablePublished(
        version=1, generated_at=NOW, config_version=config_version, aliases={"chat": cands}
    )


def test_material_change() -> None:
    base = table_with([0.5, 0.5])
    assert material_change(None, base, 0.05)
    assert not material_change(base, table_with([0.52, 0.48]), 0.05)
    assert material_change(base, table_with([0.6, 0.4]), 0.05)
    assert material_change(base, table_with([0.5, 0.5], healthy=False), 0.05)
    assert material_change(base, table_with([0.5, 0.3, 0.2]), 0.05)
    assert material_change(base, table_with([0.5, 0.5], config_version=2), 0.05)


def test_pick_follows_weights_and_never_picks_weight_zero() -> None:
    cands = [
        RouteCandidate(backend_id="a", model="m", weight=0.75),
        RouteCandidate(backend_id="b", model="m", weight=0.25),
        RouteCandidate(backend_id="c", model="m", weight=0.0),
    ]
    rng = random.Random(1)
    counts = Counter(p.backend_id for _ in range(4000) if (p := pick(cands, rng)))
    assert counts["c"] == 0
    assert 0.70 < counts["a"] / 4000 < 0.80
    assert pick([RouteCandidate(backend_id="x", model="m", weight=0)], rng) is None
