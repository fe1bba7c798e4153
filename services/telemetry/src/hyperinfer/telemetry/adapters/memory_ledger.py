"""An in-memory ledger store with the real one's contract, and failures a test can switch on.

Same promise as ``PostgresLedgerStore.write``: commit a batch unique by request id and
return the ids that were new. ``unavailable`` makes writes raise ``StoreUnavailable`` (a
database outage); a batch holding a request id in ``refuse`` raises ``StoreRejected``
(data the database cannot hold), as PostgreSQL would for the whole transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from hyperinfer.telemetry.errors import StoreRejected, StoreUnavailable
from hyperinfer.telemetry.intake import LedgerEvent


class MemoryLedgerStore:
    def __init__(self) -> None:
        self.events: dict[str, LedgerEvent] = {}
        self.unavailable = False
        self.refuse: set[str] = set()
        self.writes = 0
        self.failed_writes = 0

    async def write(self, events: Sequence[LedgerEvent]) -> set[str]:
        self.writes += 1
        if self.unavailable:
            self.failed_writes += 1
            raise StoreUnavailable("store switched off")
        bad = [e.usage.request_id for e in events if e.usage.request_id in self.refuse]
        if bad:
            self.failed_writes += 1
            raise StoreRejected(f"refused {bad[0]}")
        new = {e.usage.request_id for e in events if e.usage.request_id not in self.events}
        for event in events:
            self.events.setdefault(event.usage.request_id, event)
        return new
