"""What the handlers need from storage, as Protocols (the PostgreSQL adapter implements them).

Objects travel as plain rows (``dict`` of column → value) named by a *kind*:
``team``, ``user``, ``key``, ``alias``, ``quota``, ``backend``, ``price``, ``rule``,
``audit``.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from hyperinfer.config.domain import GovernanceState, Row


@dataclass(frozen=True)
class AuditRecord:
    """One change, written to the audit log in the transaction that makes it."""

    actor: str
    actor_team_id: str | None
    action: str
    target_type: str
    target_id: str
    team_id: str | None
    before: Row | None
    after: Row | None


@dataclass(frozen=True)
class PageQuery:
    """A listing: equality filters by name, the team it is limited to, a cursor."""

    filters: dict[str, Any] = field(default_factory=dict)
    team_id: str | None = None
    limit: int = 50
    after: str | None = None


class Transaction(Protocol):
    """One database transaction; a change ends with ``commit_change``."""

    async def get(self, kind: str, key: str, *, lock: bool = False) -> Row | None: ...

    async def find(self, kind: str, **where: Any) -> list[Row]: ...

    async def insert(self, kind: str, row: Row) -> Row: ...

    async def update(self, kind: str, key: str, values: Row) -> Row: ...

    async def delete(self, kind: str, key: str) -> None: ...

    async def backends(self, ids: list[str]) -> dict[str, Row]: ...

    async def aliases_using(self, backend_id: str) -> list[str]: ...

    async def commit_change(self, record: AuditRecord, *, prices: bool = False) -> int:
        """Take the next config version, write the audit entry; returns the version."""
        ...


class GovernanceStore(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[Transaction]: ...

    async def get(self, kind: str, key: str) -> Row | None: ...

    async def page(self, kind: str, query: PageQuery) -> tuple[list[Row], int]: ...

    async def key_by_hash(self, key_hash: str) -> tuple[Row, Row | None] | None:
        """The key with this hash and its user (if any)."""
        ...

    async def read_state(self) -> GovernanceState:
        """Everything the snapshot needs, consistent at one config version."""
        ...

    async def current_version(self) -> int: ...

    async def advance_version(self, past: int) -> int:
        """Move the version sequence past ``past`` and commit a change there."""
        ...
