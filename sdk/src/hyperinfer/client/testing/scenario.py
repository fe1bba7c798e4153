"""Config snapshots for tests and benchmarks: a team, a key, backends, aliases, prices.

::

    world = Scenario.build(
        backends={"primary": ("openai_compatible", fake.url + "/v1")},
        aliases={"chat-small": [("primary", "fake-model")]},
        rpm=60,
    )
    await store_snapshot(redis, world.snapshot)
    client = HyperInferClient(redis_url, world.api_key)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from hyperinfer.client.credentials import CredentialsCipher
from hyperinfer.client.keys import generate_api_key, hash_api_key
from hyperinfer.contracts import utc_now
from hyperinfer.contracts.config.v1 import (
    AliasConfig,
    AliasTarget,
    BackendConfig,
    BackendKind,
    ConfigSnapshot,
    FailurePolicy,
    KeyConfig,
    ModelPrice,
    QuotaConfig,
    TeamConfig,
)

SALT = "test-salt"
DEFAULT_PRICE = ModelPrice(input_per_mtok_micros=1_000_000, output_per_mtok_micros=2_000_000)


@dataclass
class Scenario:
    snapshot: ConfigSnapshot
    api_key: str
    team_id: str
    key_id: str
    keys: dict[str, str] = field(default_factory=dict)
    """Every key's plaintext by key id."""

    @classmethod
    def build(
        cls,
        *,
        backends: Mapping[str, tuple[BackendKind, str]],
        aliases: Mapping[str, Sequence[tuple[str, str]]],
        version: int = 1,
        team_id: str = "team-a",
        key_id: str = "key-a",
        scopes: Sequence[str] = (),
        expires_at: datetime | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        budget_micros: int | None = None,
        failure_policy: FailurePolicy = "closed",
        timeout_s: float = 5.0,
        prices: Mapping[str, ModelPrice] | None = None,
        credentials: Mapping[str, Mapping[str, str]] | None = None,
        cipher: CredentialsCipher | None = None,
        team_aliases: Mapping[str, Sequence[tuple[str, str]]] | None = None,
        extra_keys: Sequence[tuple[str, str]] = (),
    ) -> Scenario:
        """``extra_keys``: more (key id, team id) pairs, each with a fresh plaintext."""
        plaintexts = {key_id: generate_api_key()}
        keys = {
            hash_api_key(plaintexts[key_id], SALT): KeyConfig(
                id=key_id, team_id=team_id, scopes=list(scopes), expires_at=expires_at
            )
        }
        teams = {team_id: TeamConfig(id=team_id, name=team_id, failure_policy=failure_policy)}
        for other_key, other_team in extra_keys:
            plaintexts[other_key] = generate_api_key()
            keys[hash_api_key(plaintexts[other_key], SALT)] = KeyConfig(
                id=other_key, team_id=other_team
            )
            teams.setdefault(other_team, TeamConfig(id=other_team, name=other_team))
        sealed = credentials or {}
        backend_configs = {
            bid: BackendConfig(
                id=bid,
                name=bid,
                kind=kind,
                base_url=url,
                timeout_s=timeout_s,
                credentials_ciphertext=(
                    cipher.encrypt(bid, sealed[bid])
                    if cipher is not None and bid in sealed
                    else None
                ),
            )
            for bid, (kind, url) in backends.items()
        }
        alias_configs = [_alias(name, targets, None) for name, targets in aliases.items()]
        alias_configs += [
            _alias(name, targets, team_id) for name, targets in (team_aliases or {}).items()
        ]
        quotas = []
        if rpm is not None or tpm is not None or budget_micros is not None:
            quotas.append(
                QuotaConfig(
                    scope="team",
                    subject_id=team_id,
                    team_id=team_id,
                    rpm=rpm,
                    tpm=tpm,
                    budget_micros=budget_micros,
                )
            )
        models = {m for targets in aliases.values() for _, m in targets}
        snapshot = ConfigSnapshot(
            version=version,
            generated_at=utc_now(),
            key_hash_salt=SALT,
            teams=teams,
            keys=keys,
            aliases=alias_configs,
            quotas=quotas,
            backends=backend_configs,
            prices=dict(prices) if prices is not None else dict.fromkeys(models, DEFAULT_PRICE),
            price_version="test-1",
        )
        return cls(snapshot, plaintexts[key_id], team_id, key_id, plaintexts)


def _alias(name: str, targets: Sequence[tuple[str, str]], team_id: str | None) -> AliasConfig:
    return AliasConfig(
        name=name,
        team_id=team_id,
        targets=[AliasTarget(backend_id=b, model=m) for b, m in targets],
    )
