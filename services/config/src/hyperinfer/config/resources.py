"""The admin API's resources: what a caller sends (``*Create``, ``*Patch``) and gets back.

Request bodies refuse unknown fields (a typo is an error, not a silent no-op). In a
``*Patch`` a field left out is unchanged and an explicit ``null`` clears it. Secrets
are write-only: an API key's plaintext is returned once by ``KeyCreated``; upstream
credentials are accepted by ``BackendCreate``/``BackendPatch`` and never returned
(``has_credentials`` says whether some are stored).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from hyperinfer.contracts.config.v1 import BackendKind, BudgetPeriod, FailurePolicy
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

Role = Literal["admin", "team_admin", "member"]
QuotaScope = Literal["team", "key"]
Strategy = Literal["weighted", "score", "ordered"]

MAX_MICROS = 2**62
MAX_COUNT = 2**31 - 1

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]
Ident = Annotated[str, StringConstraints(min_length=1, max_length=100)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Label = Annotated[str, StringConstraints(max_length=200)]
Email = Annotated[str, StringConstraints(pattern=r"^[^@\s]{1,64}@[^@\s]{1,190}$")]
# ``admin``, ``chat``, ``embeddings``, ``inference``, ``model:<alias>`` (alias names as below)
Scope = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{0,31}(:[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,127})?$"),
]
Tag = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:=/-]{0,63}$")]
AliasName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,127}$")]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Micros = Annotated[int, Field(ge=0, le=MAX_MICROS, strict=True)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT, strict=True)]  # strict: true/false are not numbers
CredentialName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
CredentialValue = Annotated[str, StringConstraints(min_length=1, max_length=8192)]
Credentials = Annotated[dict[CredentialName, CredentialValue], Field(max_length=16)]
WeightName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]


class _Body(BaseModel):
    """A request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    """A response body built from a stored row (extra columns are dropped)."""

    model_config = ConfigDict(extra="ignore")


class _Versioned(_Out):
    version: int = Field(description="optimistic-concurrency version; also the ETag")
    created_at: datetime | None = None
    updated_at: datetime | None = None


# --- teams ---------------------------------------------------------------------------
class TeamCreate(_Body):
    id: Slug | None = Field(default=None, description="chosen id; generated when absent")
    name: Name
    budget_micros: Micros | None = Field(default=None, description="budget per period")
    failure_policy: FailurePolicy = "closed"


class TeamPatch(_Body):
    name: Name | None = None
    budget_micros: Micros | None = None
    failure_policy: FailurePolicy | None = None


class Team(_Versioned):
    id: str
    name: str
    budget_micros: int | None = None
    failure_policy: FailurePolicy = "closed"


# --- users ---------------------------------------------------------------------------
class UserCreate(_Body):
    email: Email
    role: Role = "member"
    team_id: Ident | None = Field(default=None, description="required unless role is admin")


class UserPatch(_Body):
    email: Email | None = None
    role: Role | None = None


class User(_Versioned):
    id: str
    email: str
    team_id: str | None = None
    role: Role


# --- API keys ------------------------------------------------------------------------
class KeyCreate(_Body):
    team_id: Ident
    name: Label = ""
    user_id: Ident | None = None
    scopes: list[Scope] = Field(default_factory=list, max_length=32)
    expires_at: AwareDatetime | None = None


class KeyPatch(_Body):
    name: Label | None = None
    scopes: list[Scope] | None = Field(default=None, max_length=32)
    expires_at: AwareDatetime | None = None
    active: bool | None = Field(default=None, description="suspend (false) or resume (true)")


class KeyLookup(_Body):
    key: Annotated[str, StringConstraints(min_length=1, max_length=512)]


class ApiKey(_Versioned):
    id: str
    team_id: str
    user_id: str | None = None
    name: str = ""
    key_hint: str = Field(description="the key's first and last characters")
    scopes: list[str] = Field(default_factory=list)
    expires_at: datetime | None = None
    active: bool = True
    revoked_at: datetime | None = None
    rotated_at: datetime | None = None


class KeyCreated(ApiKey):
    key: str = Field(description="the plaintext key; shown this once, never again")


# --- model aliases -------------------------------------------------------------------
class AliasTargetIn(_Body):
    backend_id: Ident
    model: ModelName


class AliasCreate(_Body):
    name: AliasName
    team_id: Ident | None = Field(default=None, description="absent: a global alias")
    targets: list[AliasTargetIn] = Field(
        min_length=1, max_length=16, description="first primary, the rest fallbacks in order"
    )


class AliasPatch(_Body):
    name: AliasName | None = None
    targets: list[AliasTargetIn] | None = Field(default=None, min_length=1, max_length=16)


class AliasTargetOut(_Out):
    backend_id: str
    model: str


class Alias(_Versioned):
    id: str
    name: str
    team_id: str | None = None
    targets: list[AliasTargetOut]


# --- quotas --------------------------------------------------------------------------
class _QuotaLimits(_Body):
    rpm: Count | None = None
    tpm: Count | None = None
    budget_micros: Micros | None = Field(default=None, description="hard limit per period")
    soft_limit_micros: Micros | None = Field(default=None, description="alert threshold")
    grace_micros: Micros | None = Field(default=None, description="allowed overshoot")
    budget_period: BudgetPeriod | None = None


class QuotaCreate(_QuotaLimits):
    scope: QuotaScope
    subject_id: Ident = Field(description="the team id or the key id")


class QuotaPatch(_QuotaLimits):
    pass


class Quota(_Versioned):
    id: str
    scope: QuotaScope
    subject_id: str
    team_id: str
    rpm: int | None = None
    tpm: int | None = None
    budget_micros: int | None = None
    soft_limit_micros: int | None = None
    grace_micros: int = 0
    budget_period: BudgetPeriod = "monthly"


# --- backends ------------------------------------------------------------------------
class BackendCreate(_Body):
    id: Slug | None = Field(default=None, description="chosen id; generated when absent")
    name: Name
    kind: BackendKind
    base_url: Annotated[str, StringConstraints(max_length=2000)] = ""
    models: list[ModelName] = Field(default_factory=list, max_length=512)
    weight: float = Field(default=1.0, ge=0, le=1_000_000)
    tags: list[Tag] = Field(default_factory=list, max_length=32)
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    credentials: Credentials | None = Field(
        default=None, description='write-only, e.g. {"api_key": "..."}; encrypted at rest'
    )


class BackendPatch(_Body):
    name: Name | None = None
    base_url: Annotated[str, StringConstraints(max_length=2000)] | None = None
    models: list[ModelName] | None = Field(default=None, max_length=512)
    weight: float | None = Field(default=None, ge=0, le=1_000_000)
    tags: list[Tag] | None = Field(default=None, max_length=32)
    timeout_s: float | None = Field(default=None, gt=0, le=3600)
    credentials: Credentials | None = Field(default=None, description="null removes them")


class Backend(_Versioned):
    id: str
    name: str
    kind: BackendKind
    base_url: str = ""
    models: list[str] = Field(default_factory=list)
    weight: float = 1.0
    tags: list[str] = Field(default_factory=list)
    timeout_s: float = 60.0
    has_credentials: bool = False


# --- model prices --------------------------------------------------------------------
class PriceSet(_Body):
    input_per_mtok_micros: Micros
    output_per_mtok_micros: Micros


class Price(_Out):
    model: str
    input_per_mtok_micros: int
    output_per_mtok_micros: int
    version: int
    updated_at: datetime | None = None


# --- routing rules -------------------------------------------------------------------
class RuleCreate(_Body):
    name: Name
    alias: AliasName | None = Field(default=None, description="absent: the default rule")
    strategy: Strategy = "weighted"
    weights: dict[WeightName, float] = Field(default_factory=dict, max_length=32)

    @field_validator("weights")
    @classmethod
    def _finite(cls, value: dict[str, float]) -> dict[str, float]:
        return _finite_weights(value)


class RulePatch(_Body):
    name: Name | None = None
    alias: AliasName | None = None
    strategy: Strategy | None = None
    weights: dict[WeightName, float] | None = Field(default=None, max_length=32)

    @field_validator("weights")
    @classmethod
    def _finite(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        return None if value is None else _finite_weights(value)


def _finite_weights(value: dict[str, float]) -> dict[str, float]:
    for name, weight in value.items():
        if not math.isfinite(weight) or not 0 <= weight <= 1000:
            raise ValueError(f"weight {name} must be between 0 and 1000")
    return value


class RoutingRule(_Versioned):
    id: str
    name: str
    alias: str | None = None
    strategy: Strategy
    weights: dict[str, float] = Field(default_factory=dict)


# --- audit, config, pages ------------------------------------------------------------
class AuditEntry(_Out):
    id: int
    at: datetime
    actor: str
    actor_team_id: str | None = None
    action: str
    target_type: str
    target_id: str
    team_id: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    config_version: int | None = None


class ConfigVersion(_Out):
    version: int = Field(description="the newest committed config version")
    published_version: int = Field(description="the newest version this replica stored")
    redis_version: int | None = Field(description="the version stored in Redis now")


class WhoAmI(_Out):
    actor: str
    team_id: str | None = Field(description="null: every team (master admin)")
    role: Literal["admin", "team_admin"]


ItemT = TypeVar("ItemT", bound=BaseModel)


class Page(BaseModel, Generic[ItemT]):
    items: list[ItemT]
    total: int = Field(description="items matching the filters, across all pages")
    limit: int
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")
