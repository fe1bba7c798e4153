"""Settings of the router service.

Env prefix ``HYPERINFER_ROUTER_`` for own fields; shared infrastructure reads
``HYPERINFER_*``. Score weights here are the defaults; a routing rule in config
(``RoutingRule.weights``) overrides them per alias.
"""

from __future__ import annotations

from typing import Literal

from hyperinfer.router.domain import COMPONENTS, DEFAULT_WEIGHTS, Policy
from hyperinfer.router.state import Tuning
from hyperinfer.runtime.settings import ServiceSettings
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict


class RouterSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="HYPERINFER_ROUTER_", extra="ignore", populate_by_name=True, frozen=True
    )

    http_port: int = Field(default=8104, ge=0, le=65535)
    default_strategy: Literal["score", "weighted", "ordered"] = Field(
        default="score", description="for aliases without a routing rule"
    )
    score_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_WEIGHTS),
        description="JSON object, component → exponent; missing components keep defaults",
    )
    queue_ref: float = Field(default=1.0, gt=0, description="queued requests halving the score")
    error_ref: float = Field(default=0.05, gt=0, description="error rate halving the score")
    latency_slack_ms: float = Field(
        default=50.0, ge=0, description="latency differences well below this do not matter"
    )
    min_fresh_candidates: int = Field(
        default=2, ge=1, description="fresh candidates needed to eject stale ones"
    )
    recompute_interval_s: float = Field(default=0.5, gt=0, le=60)
    publish_max_interval_s: float = Field(
        default=5.0, gt=0, le=300, description="publish at least this often, changed or not"
    )
    material_change: float = Field(
        default=0.05, gt=0, le=1, description="a weight moving this much is published at once"
    )
    backend_stale_after_s: float = Field(default=10.0, gt=0)
    gpu_stale_after_s: float = Field(default=15.0, gt=0)
    stale_after_intervals: float = Field(
        default=3.0, gt=0, description="also stale after this many missed report intervals"
    )
    recover_after: int = Field(
        default=2, ge=1, description="healthy reports in a row to readmit an ejected backend"
    )
    history_tau_s: float = Field(default=30.0, gt=0, description="availability EWMA time")
    latency_tau_s: float = Field(default=5.0, gt=0, description="latency EWMA time constant")
    rollup_horizon_s: float = Field(default=180.0, gt=0)
    rollup_min_requests: int = Field(default=5, ge=1)
    leader_lease_s: float = Field(
        default=5.0, gt=0, description="one replica publishes; the others take over after this"
    )

    @field_validator("score_weights")
    @classmethod
    def _known_components(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(COMPONENTS))
        if unknown:
            raise ValueError(f"unknown score components {unknown}; known: {list(COMPONENTS)}")
        if any(not 0 <= v < float("inf") for v in value.values()):
            raise ValueError("score weights must be finite and >= 0")
        return {**DEFAULT_WEIGHTS, **value}

    def policy(self) -> Policy:
        return Policy(
            default_strategy=self.default_strategy,
            weights=dict(self.score_weights),
            queue_ref=self.queue_ref,
            error_ref=self.error_ref,
            latency_slack_ms=self.latency_slack_ms,
            min_fresh_candidates=self.min_fresh_candidates,
        )

    def tuning(self) -> Tuning:
        return Tuning(
            backend_stale_after_s=self.backend_stale_after_s,
            gpu_stale_after_s=self.gpu_stale_after_s,
            stale_after_intervals=self.stale_after_intervals,
            recover_after=self.recover_after,
            history_tau_s=self.history_tau_s,
            latency_tau_s=self.latency_tau_s,
            rollup_horizon_s=self.rollup_horizon_s,
            rollup_min_requests=self.rollup_min_requests,
        )
