"""Routing contracts v1: the table the data plane applies locally, and resolve request/reply."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

EVENT_TABLE = "routing.table"
COMMAND_RESOLVE = "router.resolve"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RouteCandidate(_Model):
    backend_id: str
    model: str
    weight: float = Field(ge=0)
    healthy: bool = True
    score: float | None = None
    reason: str | None = Field(
        default=None, description="why the weight is what it is: ejected, static, panic"
    )


class RoutingTablePublished(_Model):
    """Weights per alias candidate; ``static_fallback`` when the state was too stale.

    ``aliases`` holds global aliases by name, ``team_aliases`` team-scoped ones by team id
    then name; a team's own alias wins over a global one of the same name. Candidates keep
    the config's target order (first is primary); weights of one alias sum to 1 unless every
    candidate is ejected. A weight of 0 means: send it nothing.
    """

    version: int = Field(ge=0)
    generated_at: AwareDatetime
    config_version: int = Field(default=0, ge=0)
    static_fallback: bool = False
    aliases: dict[str, list[RouteCandidate]] = Field(default_factory=dict)
    team_aliases: dict[str, dict[str, list[RouteCandidate]]] = Field(default_factory=dict)
    fallback_aliases: list[str] = Field(
        default_factory=list,
        description="aliases on static config weights because their state is stale",
    )


class ResolveRoute(_Model):
    alias: str
    team_id: str | None = None


class RouteResolution(_Model):
    alias: str
    found: bool
    backend_id: str | None = None
    model: str | None = None
    score: float | None = None
    table_version: int = 0
    reason: str | None = None
