"""Plain functions: resolve one alias, explain one decision, check a caller's key."""

from __future__ import annotations

import hmac
import random
from dataclasses import asdict
from typing import Any

from hyperinfer.contracts.routing.v1 import ResolveRoute, RouteResolution, RoutingTablePublished
from hyperinfer.router.domain import AliasDecision, CandidateDecision, candidates_for, pick
from hyperinfer.router.errors import InvalidRequest, Unauthorized, UnknownAlias


def resolve(
    request: ResolveRoute, table: RoutingTablePublished, rng: random.Random
) -> RouteResolution:
    """A weighted pick from the current table, as the data plane would make it."""
    candidates = candidates_for(table, request.alias, request.team_id)
    if candidates is None:
        return RouteResolution(
            alias=request.alias, found=False, table_version=table.version, reason="unknown alias"
        )
    choice = pick(candidates, rng)
    if choice is None:
        return RouteResolution(
            alias=request.alias,
            found=False,
            table_version=table.version,
            reason="no candidate has a weight above 0",
        )
    return RouteResolution(
        alias=request.alias,
        found=True,
        backend_id=choice.backend_id,
        model=choice.model,
        score=choice.score,
        table_version=table.version,
        reason=choice.reason,
    )


def find_decision(decisions: list[AliasDecision], alias: str, team_id: str | None) -> AliasDecision:
    """A team's own alias first, then the global one (the data plane's lookup order)."""
    if not alias.strip():
        raise InvalidRequest("query parameter alias must not be empty")
    if team_id is not None:
        own = next((d for d in decisions if d.alias == alias and d.team_id == team_id), None)
        if own is not None:
            return own
    found = next((d for d in decisions if d.alias == alias and d.team_id is None), None)
    if found is None:
        scope = f" (team {team_id})" if team_id else ""
        raise UnknownAlias(f"alias {alias!r}{scope} is not in the config snapshot")
    return found


def explain(
    decision: AliasDecision, table: RoutingTablePublished, config_version: int, leader: bool
) -> dict[str, Any]:
    """Every candidate's inputs, score components, weight and ejection reason."""
    published = candidates_for(table, decision.alias, decision.team_id) or []
    published_weights = {(c.backend_id, c.model): c.weight for c in published}
    return {
        "alias": decision.alias,
        "team_id": decision.team_id,
        "strategy": decision.strategy,
        "mode": decision.mode,
        "static_fallback": decision.static_fallback,
        "notes": list(decision.notes),
        "config_version": config_version,
        "table_version": table.version,
        "table_generated_at": table.generated_at.isoformat(),
        "publisher": leader,
        "candidates": [_candidate(c, published_weights) for c in decision.candidates],
    }


def _candidate(
    decision: CandidateDecision, published: dict[tuple[str, str], float]
) -> dict[str, Any]:
    view = decision.view
    return {
        "backend_id": view.backend_id,
        "model": view.model,
        "weight": decision.weight,
        "published_weight": published.get((view.backend_id, view.model)),
        "ejected": decision.ejected,
        "reason": decision.reason,
        "score": decision.score,
        "static_weight": view.static_weight,
        "known_backend": view.known,
        "freshness": view.freshness,
        "state_age_s": view.state_age_s,
        "inputs": asdict(view.inputs),
        "sources": dict(view.sources),
        "components": [asdict(c) for c in decision.components],
    }


def authorize(
    authorization: str | None, internal_key: str | None, admin_secret: str, internal_secret: str
) -> None:
    """The master admin key as a bearer token, or the shared internal key."""
    if internal_key and hmac.compare_digest(internal_key.encode(), internal_secret.encode()):
        return
    scheme, _, token = (authorization or "").partition(" ")
    bearer = scheme.lower() == "bearer" and bool(token)
    if bearer and hmac.compare_digest(token.strip().encode(), admin_secret.encode()):
        return
    raise Unauthorized("send Authorization: Bearer <admin key> or X-Internal-Key")
