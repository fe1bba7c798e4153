"""The routing table agent: every node's local copy of the router's weights.

The router stores each new ``RoutingTablePublished`` with ``store_routing_table``;
data-plane nodes keep the newest one with a ``RoutingTableAgent`` and apply it
locally (no NATS hop on the hot path). Version 0 is "no table yet": callers fall
back to static weights from the config snapshot.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from hyperinfer.client._versioned import DocumentKind, DocumentWatcher, store_document
from hyperinfer.contracts import Envelope, names, utc_now
from hyperinfer.contracts.routing.v1 import EVENT_TABLE, RoutingTablePublished

ROUTING = DocumentKind(
    "routing", names.ROUTING_TABLE_KEY, names.ROUTING_UPDATES_CHANNEL, RoutingTablePublished
)


def empty_table() -> RoutingTablePublished:
    return RoutingTablePublished(version=0, generated_at=utc_now())


async def store_routing_table(
    redis: aioredis.Redis, table: RoutingTablePublished, source: str = "router"
) -> bool:
    """Store ``table`` and announce it, unless a newer one is stored already."""
    notice = Envelope[RoutingTablePublished](type=EVENT_TABLE, source=source, data=table)
    return await store_document(redis, ROUTING, table, notice.model_dump_json().encode())


class RoutingTableAgent(DocumentWatcher[RoutingTablePublished]):
    """The newest routing table, kept current by push with pull repair."""

    def __init__(self, redis: aioredis.Redis, *, check_interval_s: float = 5.0) -> None:
        super().__init__(redis, ROUTING, empty_table(), check_interval_s=check_interval_s)

    @property
    def table(self) -> RoutingTablePublished:
        return self.document
