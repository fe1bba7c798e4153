"""The config agent: every node's local copy of the governance snapshot.

The config service stores each new ``ConfigSnapshot`` with ``store_snapshot``; every
data-plane node (ingress replicas, thick clients, services) runs a ``ConfigAgent``
that keeps the newest one in memory and is told of changes through Redis pub/sub.
See ``_versioned`` for why no update is ever lost.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from hyperinfer.client._versioned import DocumentKind, DocumentWatcher, store_document
from hyperinfer.contracts import Envelope, names, utc_now
from hyperinfer.contracts.config.v1 import EVENT_CHANGED, ConfigChanged, ConfigSnapshot

CONFIG = DocumentKind(
    "config", names.CONFIG_SNAPSHOT_KEY, names.CONFIG_UPDATES_CHANNEL, ConfigSnapshot
)


def empty_snapshot() -> ConfigSnapshot:
    """Version 0: what a node holds before it has seen any config."""
    return ConfigSnapshot(version=0, generated_at=utc_now())


def change_notice(
    snapshot: ConfigSnapshot, kinds: list[str] | None = None
) -> Envelope[ConfigChanged]:
    """The ``config.changed`` envelope that announces ``snapshot``."""
    data = ConfigChanged(
        version=snapshot.version, changed_at=snapshot.generated_at, kinds=kinds or []
    )
    return Envelope[ConfigChanged](type=EVENT_CHANGED, source="config", data=data)


async def store_snapshot(
    redis: aioredis.Redis, snapshot: ConfigSnapshot, kinds: list[str] | None = None
) -> bool:
    """Store ``snapshot`` and announce it, unless a newer one is stored already."""
    notice = change_notice(snapshot, kinds).model_dump_json().encode()
    return await store_document(redis, CONFIG, snapshot, notice)


class ConfigAgent(DocumentWatcher[ConfigSnapshot]):
    """The newest config snapshot, kept current by push with pull repair."""

    def __init__(self, redis: aioredis.Redis, *, check_interval_s: float = 5.0) -> None:
        super().__init__(redis, CONFIG, empty_snapshot(), check_interval_s=check_interval_s)

    @property
    def snapshot(self) -> ConfigSnapshot:
        return self.document
