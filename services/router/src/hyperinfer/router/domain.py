"""Backend scoring, ejection and the routing table: pure policy, no I/O, no clock.

Score of one candidate (a backend serving one alias target) — a weighted geometric mean::

    score = Π factor_c ** weight_c            factor_c in [0.01, 1], 1 = ideal

    gpu_utilization  1 - 0.9·u                 u: busiest of the backend's GPUs, 0..1
    gpu_memory       0.1 + 0.9·f               f: least free memory fraction of its GPUs
    queue            1 / (1 + q / queue_ref)   q: waiting (vLLM) + pending (Triton) requests
    kv_cache         1 - 0.9·k                 k: KV-cache usage, 0..1
    latency          (best + s) / (latency + s) relative to the fastest candidate of the alias;
                                               s = latency_slack_ms: a few ms apart is a tie
    error_rate       1 / (1 + e / error_ref)   e: failed / finished (engine or telemetry)
    history          0.1 + 0.9·a               a: availability EWMA (slow start after ejection)

An unknown input leaves its factor at 1 (neutral). The traffic weight of a candidate is
``static weight from config * score``, normalised so an alias's weights sum to 1.
Component weights come from the alias's routing rule (``RoutingRule.weights``) over the
defaults; a weight of 0 switches a component off.

Ejection (weight 0): a candidate whose backend is unknown, reported unhealthy (and not yet
healthy for ``recover_after`` reports in a row — half-open), or whose model is not ready.
Staleness: a backend whose reports stopped is ejected only while at least
``min_fresh_candidates`` fresh, healthy candidates remain; otherwise the alias falls back
to the static weights from config — stale information never concentrates traffic on one
backend. If every candidate is ejected the alias panics: static weights over all of them,
marked healthy (like Envoy's panic threshold), so callers still get something to try.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from hyperinfer.contracts.config.v1 import AliasConfig, ConfigSnapshot, RoutingRule
from hyperinfer.contracts.routing.v1 import RouteCandidate, RoutingTablePublished

Strategy = Literal["score", "weighted", "ordered"]
Mode = Literal["score", "static", "weighted", "ordered", "panic"]
Freshness = Literal["fresh", "stale", "unmonitored"]

COMPONENTS = (
    "gpu_utilization",
    "gpu_memory",
    "queue",
    "kv_cache",
    "latency",
    "error_rate",
    "history",
)
DEFAULT_WEIGHTS: Mapping[str, float] = {
    "gpu_utilization": 0.5,
    "gpu_memory": 0.5,
    "queue": 1.0,
    "kv_cache": 0.5,
    "latency": 1.0,
    "error_rate": 1.0,
    "history": 1.0,
}
FLOOR = 0.01


@dataclass(frozen=True)
class Policy:
    """Everything the decision depends on besides the observations."""

    default_strategy: Strategy = "score"
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    queue_ref: float = 1.0
    error_ref: float = 0.05
    latency_slack_ms: float = 50.0
    min_fresh_candidates: int = 2


@dataclass(frozen=True)
class Inputs:
    """What is known about one candidate; None means unknown (a neutral factor)."""

    gpu_utilization: float | None = None
    gpu_memory_free: float | None = None
    queue: float | None = None
    running: float | None = None
    kv_cache: float | None = None
    latency_ms: float | None = None
    error_rate: float | None = None
    availability: float | None = None


@dataclass(frozen=True)
class CandidateView:
    """One alias target as the router sees it at decision time."""

    backend_id: str
    model: str
    known: bool = True
    static_weight: float = 1.0
    freshness: Freshness = "unmonitored"
    state_age_s: float | None = None
    ejected_reason: str | None = None
    inputs: Inputs = field(default_factory=Inputs)
    sources: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Component:
    name: str
    input: float | None
    factor: float
    weight: float


@dataclass(frozen=True)
class CandidateDecision:
    view: CandidateView
    weight: float
    ejected: bool
    reason: str | None = None
    score: float | None = None
    components: tuple[Component, ...] = ()


@dataclass(frozen=True)
class AliasDecision:
    alias: str
    team_id: str | None
    strategy: Strategy
    mode: Mode
    candidates: tuple[CandidateDecision, ...]
    notes: tuple[str, ...] = ()

    @property
    def static_fallback(self) -> bool:
        return self.mode == "static"


# --- health: ejection and half-open recovery -----------------------------------------
@dataclass(frozen=True)
class HealthRecord:
    """Ejection state of one backend plus its availability history (an EWMA of 0/1)."""

    ejected: bool = False
    reason: str | None = None
    healthy_streak: int = 0
    availability: float = 1.0
    updated_at: float | None = None


def observe_health(
    record: HealthRecord | None,
    healthy: bool,
    detail: str | None,
    now: float,
    recover_after: int,
    history_tau_s: float,
) -> HealthRecord:
    """Apply one health report: eject at once, readmit after ``recover_after`` good ones."""
    value = 1.0 if healthy else 0.0
    if record is None:
        availability = value
    else:
        since = now - record.updated_at if record.updated_at is not None else 0.0
        availability = ewma(record.availability, value, since, history_tau_s)
    if not healthy:
        reason = f"unhealthy: {detail}" if detail else "unhealthy"
        return HealthRecord(True, reason, 0, availability, now)
    streak = (record.healthy_streak if record else 0) + 1
    if record is not None and record.ejected and streak < recover_after:
        reason = f"recovering: {streak}/{recover_after} healthy reports"
        return HealthRecord(True, reason, streak, availability, now)
    return HealthRecord(False, None, streak, availability, now)


def ewma(previous: float | None, value: float, elapsed_s: float, tau_s: float) -> float:
    """Time-based EWMA: after ``tau_s`` seconds the old value keeps ~37% of its weight."""
    if previous is None:
        return value
    alpha = 1.0 - math.exp(-max(elapsed_s, 0.0) / tau_s) if tau_s > 0 else 1.0
    return previous + alpha * (value - previous)


# --- scoring ----------------------------------------------------------------------
def factors(
    inputs: Inputs, best_latency_ms: float | None, policy: Policy
) -> dict[str, float | None]:
    """Each component's factor in [FLOOR, 1], or None when its input is unknown."""
    latency = None
    if inputs.latency_ms is not None and best_latency_ms is not None and inputs.latency_ms > 0:
        slack = policy.latency_slack_ms
        latency = (best_latency_ms + slack) / (inputs.latency_ms + slack)
    return {
        "gpu_utilization": _map(inputs.gpu_utilization, lambda u: 1 - 0.9 * _unit(u)),
        "gpu_memory": _map(inputs.gpu_memory_free, lambda f: 0.1 + 0.9 * _unit(f)),
        "queue": _map(inputs.queue, lambda q: 1 / (1 + max(q, 0.0) / policy.queue_ref)),
        "kv_cache": _map(inputs.kv_cache, lambda k: 1 - 0.9 * _unit(k)),
        "latency": _clamp(latency) if latency is not None else None,
        "error_rate": _map(inputs.error_rate, lambda e: 1 / (1 + _unit(e) / policy.error_ref)),
        "history": _map(inputs.availability, lambda a: 0.1 + 0.9 * _unit(a)),
    }


def score(
    inputs: Inputs, weights: Mapping[str, float], best_latency_ms: float | None, policy: Policy
) -> tuple[float, tuple[Component, ...]]:
    """The weighted geometric mean of the factors, with each component for ``explain``."""
    raw = _inputs_by_component(inputs)
    components = []
    total = 1.0
    for name, factor in factors(inputs, best_latency_ms, policy).items():
        weight = weights.get(name, 0.0)
        neutral = 1.0 if factor is None else factor
        total *= neutral**weight
        components.append(Component(name, raw[name], neutral, weight))
    return total, tuple(components)


def _inputs_by_component(inputs: Inputs) -> dict[str, float | None]:
    return {
        "gpu_utilization": inputs.gpu_utilization,
        "gpu_memory": inputs.gpu_memory_free,
        "queue": inputs.queue,
        "kv_cache": inputs.kv_cache,
        "latency": inputs.latency_ms,
        "error_rate": inputs.error_rate,
        "history": inputs.availability,
    }


def _map(value: float | None, fn: Callable[[float], float]) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return _clamp(fn(value))


def _unit(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def _clamp(value: float) -> float:
    return min(max(value, FLOOR), 1.0)


# --- rules ------------------------------------------------------------------------
def rule_for(alias: str, rules: Sequence[RoutingRule]) -> RoutingRule | None:
    """The rule naming ``alias``, else the first rule without an alias (the default)."""
    named = next((r for r in rules if r.alias == alias), None)
    return named or next((r for r in rules if r.alias is None), None)


def weights_for(
    rule: RoutingRule | None, defaults: Mapping[str, float]
) -> tuple[dict[str, float], list[str]]:
    """Defaults overridden by the rule's weights; unusable entries are skipped with a note."""
    weights = dict(defaults)
    notes = []
    for name, value in (rule.weights if rule else {}).items():
        if name not in COMPONENTS:
            notes.append(f"unknown score weight {name!r} ignored")
        elif not math.isfinite(value) or value < 0:
            notes.append(f"score weight {name}={value} ignored (must be >= 0)")
        else:
            weights[name] = value
    return weights, notes


# --- deciding one alias -------------------------------------------------------------
def decide_alias(
    alias: AliasConfig,
    views: Sequence[CandidateView],
    rule: RoutingRule | None,
    policy: Policy,
) -> AliasDecision:
    strategy: Strategy = rule.strategy if rule is not None else policy.default_strategy
    weights, notes = weights_for(rule, policy.weights)
    ejected = {i: reason for i, v in enumerate(views) if (reason := _ejection(v)) is not None}
    live = [i for i in range(len(views)) if i not in ejected]
    stale = [i for i in live if views[i].freshness == "stale"]
    mode: Mode = strategy
    if strategy == "score" and stale:
        fresh = [i for i in live if views[i].freshness == "fresh"]
        if len(fresh) >= policy.min_fresh_candidates:
            ejected.update({i: _stale_reason(views[i]) for i in stale})
            live = fresh + [i for i in live if views[i].freshness == "unmonitored"]
            live.sort()
        else:
            mode = "static"
            notes.append(
                f"{len(stale)} candidate(s) with stale state and only {len(fresh)} fresh: "
                "static weights from config"
            )
    if not live:
        return _panic(alias, strategy, views, ejected, notes)
    raw = _raw_weights(mode, views, live, weights, policy)
    return AliasDecision(
        alias=alias.name,
        team_id=alias.team_id,
        strategy=strategy,
        mode=mode,
        candidates=_normalised(views, raw, ejected, mode),
        notes=tuple(notes),
    )


def _ejection(view: CandidateView) -> str | None:
    if not view.known:
        return "unknown backend: not in the config snapshot"
    if view.static_weight <= 0:
        return "static weight 0 in config"
    return view.ejected_reason


def _stale_reason(view: CandidateView) -> str:
    age = f" ({view.state_age_s:.1f}s old)" if view.state_age_s is not None else ""
    return f"stale state{age}"


def _raw_weights(
    mode: Mode,
    views: Sequence[CandidateView],
    live: list[int],
    weights: Mapping[str, float],
    policy: Policy,
) -> dict[int, tuple[float, float | None, tuple[Component, ...]]]:
    """Per live candidate: (unnormalised weight, score, components)."""
    if mode == "ordered":
        return {i: (1.0 if i == live[0] else 0.0, None, ()) for i in live}
    if mode != "score":
        return {i: (views[i].static_weight, None, ()) for i in live}
    latencies = [views[i].inputs.latency_ms for i in live]
    best = min((x for x in latencies if x is not None and x > 0), default=None)
    out: dict[int, tuple[float, float | None, tuple[Component, ...]]] = {}
    for i in live:
        value, components = score(views[i].inputs, weights, best, policy)
        out[i] = (views[i].static_weight * value, value, components)
    return out


def _normalised(
    views: Sequence[CandidateView],
    raw: Mapping[int, tuple[float, float | None, tuple[Component, ...]]],
    ejected: Mapping[int, str],
    mode: Mode,
) -> tuple[CandidateDecision, ...]:
    total = sum(w for w, _, _ in raw.values())
    out = []
    for i, view in enumerate(views):
        if i in ejected:
            out.append(CandidateDecision(view, 0.0, True, f"ejected: {ejected[i]}"))
            continue
        weight, value, components = raw[i]
        share = weight / total if total > 0 else 1.0 / len(raw)
        reason = "static: state stale" if mode == "static" else None
        out.append(CandidateDecision(view, round(share, 6), False, reason, value, components))
    return tuple(out)


def _panic(
    alias: AliasConfig,
    strategy: Strategy,
    views: Sequence[CandidateView],
    ejected: Mapping[int, str],
    notes: list[str],
) -> AliasDecision:
    """Every candidate ejected: route to all usable ones by static weight, as if healthy.

    The health signal is then more likely wrong than every backend dead at once (the
    collector cut off from them, say), and spreading beats hammering the primary.
    """
    usable = [i for i, v in enumerate(views) if v.known and v.static_weight > 0]
    total = sum(views[i].static_weight for i in usable)
    candidates = tuple(
        CandidateDecision(
            view,
            round(view.static_weight / total, 6) if i in usable and total > 0 else 0.0,
            i not in usable,
            f"panic: every candidate ejected; this one: {ejected.get(i, 'ejected')}",
        )
        for i, view in enumerate(views)
    )
    notes.append("every candidate is ejected: static weights over all of them (panic)")
    return AliasDecision(alias.name, alias.team_id, strategy, "panic", candidates, tuple(notes))


# --- the table ----------------------------------------------------------------------
ViewFn = Callable[[str, str], CandidateView]


def decide_table(snapshot: ConfigSnapshot, view: ViewFn, policy: Policy) -> list[AliasDecision]:
    """One decision per alias of the snapshot; ``view(backend_id, model)`` observes."""
    decisions = []
    for alias in snapshot.aliases:
        views = [view(t.backend_id, t.model) for t in alias.targets]
        decisions.append(
            decide_alias(alias, views, rule_for(alias.name, snapshot.routing_rules), policy)
        )
    return decisions


def to_table(
    decisions: Sequence[AliasDecision], version: int, config_version: int, generated_at: datetime
) -> RoutingTablePublished:
    table = RoutingTablePublished(
        version=version, generated_at=generated_at, config_version=config_version
    )
    for decision in decisions:
        candidates = [_route(c) for c in decision.candidates]
        if decision.team_id is None:
            table.aliases[decision.alias] = candidates
        else:
            table.team_aliases.setdefault(decision.team_id, {})[decision.alias] = candidates
        if decision.static_fallback:
            table.fallback_aliases.append(_label(decision))
    table.static_fallback = bool(table.fallback_aliases)
    return table


def _route(decision: CandidateDecision) -> RouteCandidate:
    return RouteCandidate(
        backend_id=decision.view.backend_id,
        model=decision.view.model,
        weight=decision.weight,
        healthy=not decision.ejected,
        score=round(decision.score, 6) if decision.score is not None else None,
        reason=decision.reason,
    )


def _label(decision: AliasDecision) -> str:
    return decision.alias if decision.team_id is None else f"{decision.team_id}/{decision.alias}"


def material_change(
    old: RoutingTablePublished | None, new: RoutingTablePublished, threshold: float
) -> bool:
    """True when the data plane should get ``new``: shape, health or a weight moved enough."""
    if old is None or old.config_version != new.config_version:
        return True
    if old.static_fallback != new.static_fallback or old.fallback_aliases != new.fallback_aliases:
        return True
    before, after = _groups(old), _groups(new)
    if _shape(before) != _shape(after):
        return True
    return any(
        a.healthy != b.healthy or abs(a.weight - b.weight) >= threshold
        for key, candidates in after.items()
        for a, b in zip(candidates, before[key], strict=True)
    )


def _groups(table: RoutingTablePublished) -> dict[tuple[str, str], list[RouteCandidate]]:
    groups = {("", alias): c for alias, c in table.aliases.items()}
    for team, aliases in table.team_aliases.items():
        groups.update({(team, alias): c for alias, c in aliases.items()})
    return groups


def _shape(
    groups: Mapping[tuple[str, str], list[RouteCandidate]],
) -> dict[tuple[str, str], list[tuple[str, str]]]:
    return {key: [(c.backend_id, c.model) for c in cands] for key, cands in groups.items()}


# --- picking ------------------------------------------------------------------------
def candidates_for(
    table: RoutingTablePublished, alias: str, team_id: str | None = None
) -> list[RouteCandidate] | None:
    """A team's own alias first, then the global one; None when neither exists."""
    if team_id is not None:
        own = table.team_aliases.get(team_id, {}).get(alias)
        if own is not None:
            return own
    return table.aliases.get(alias)


def pick(candidates: Sequence[RouteCandidate], rng: random.Random) -> RouteCandidate | None:
    """A weighted random choice among candidates with weight > 0; None if there is none."""
    usable = [c for c in candidates if c.weight > 0]
    if not usable:
        return None
    return rng.choices(usable, weights=[c.weight for c in usable], k=1)[0]
