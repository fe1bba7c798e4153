"""Config contracts v1: the versioned snapshot the data plane runs on, and its change event.

The snapshot carries everything the hot path needs and nothing secret in plaintext:
API keys appear only as keyed hashes, upstream credentials only as ciphertext.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

EVENT_CHANGED = "config.changed"

BackendKind = Literal["openai", "anthropic", "gemini", "openai_compatible", "triton", "echo"]
BudgetPeriod = Literal["daily", "weekly", "monthly"]
FailurePolicy = Literal["closed", "open"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ConfigChanged(_Model):
    """Announced after every committed governance change."""

    version: int = Field(ge=0)
    changed_at: AwareDatetime
    kinds: list[str] = Field(
        default_factory=list, description="what changed: team, key, alias, ..."
    )


class TeamConfig(_Model):
    id: str
    name: str
    failure_policy: FailurePolicy = "closed"
    budget_micros: int | None = Field(
        default=None,
        ge=0,
        description="the team's budget per period; also folded into the team's QuotaConfig",
    )


class KeyConfig(_Model):
    """An API key as the data plane sees it: looked up by its keyed hash."""

    id: str
    team_id: str
    user_id: str | None = None
    name: str = ""
    scopes: list[str] = Field(default_factory=list)
    expires_at: AwareDatetime | None = None
    active: bool = True
    admin_scope: Literal["platform", "team"] | None = Field(
        default=None,
        description="what this key may administer, as the config service decides it: "
        "'platform' (an admin-scoped key of a user with role admin: every team), 'team' "
        "(an admin-scoped key of its team's team_admin: that team only), None (no admin rights)",
    )


class AliasTarget(_Model):
    backend_id: str
    model: str


class AliasConfig(_Model):
    """``name`` → ordered targets: the first is primary, the rest are fallbacks."""

    name: str
    team_id: str | None = Field(default=None, description="None: a global alias")
    targets: list[AliasTarget] = Field(min_length=1)


class QuotaConfig(_Model):
    """Limits for a team or a key. Money is integer micro-units of currency."""

    scope: Literal["team", "key"]
    subject_id: str
    team_id: str
    rpm: int | None = Field(default=None, ge=0)
    tpm: int | None = Field(default=None, ge=0)
    budget_micros: int | None = Field(default=None, ge=0, description="hard limit")
    soft_limit_micros: int | None = Field(default=None, ge=0)
    grace_micros: int = Field(default=0, ge=0)
    budget_period: BudgetPeriod = "monthly"


class BackendConfig(_Model):
    id: str
    name: str
    kind: BackendKind
    base_url: str = ""
    models: list[str] = Field(default_factory=list)
    weight: float = Field(default=1.0, ge=0)
    tags: list[str] = Field(default_factory=list)
    timeout_s: float = Field(default=60.0, gt=0)
    credentials_ciphertext: str | None = Field(
        default=None, description="upstream credentials, encrypted with the master key"
    )


class ModelPrice(_Model):
    """Price per million tokens, in micro-units of currency."""

    input_per_mtok_micros: int = Field(ge=0)
    output_per_mtok_micros: int = Field(ge=0)


class RoutingRule(_Model):
    name: str
    alias: str | None = None
    strategy: Literal["weighted", "score", "ordered"] = "weighted"
    weights: dict[str, float] = Field(default_factory=dict, description="score component weights")


class ConfigSnapshot(_Model):
    """Everything the data plane needs, at one config version."""

    version: int = Field(ge=0)
    generated_at: AwareDatetime
    key_hash_scheme: str = Field(default="hmac-sha256", description="how keys are hashed")
    key_hash_salt: str = Field(default="", description="non-secret salt mixed into key hashes")
    teams: dict[str, TeamConfig] = Field(default_factory=dict)
    keys: dict[str, KeyConfig] = Field(default_factory=dict, description="keyed hash → key")
    aliases: list[AliasConfig] = Field(default_factory=list)
    quotas: list[QuotaConfig] = Field(default_factory=list)
    backends: dict[str, BackendConfig] = Field(default_factory=dict)
    prices: dict[str, ModelPrice] = Field(default_factory=dict, description="model → price")
    price_version: str = "0"
    routing_rules: list[RoutingRule] = Field(default_factory=list)
