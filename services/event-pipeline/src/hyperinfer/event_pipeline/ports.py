"""What the worker, admission control, retries and the DLQ need from a queue backend.

Two adapters implement ``JobQueue`` and ``DeadLetterStore``: JetStream
(``adapters/jetstream_queue.py``) and Redis Streams (``adapters/redis_queue.py``).
Everything above this line is written once against these Protocols.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from hyperinfer.contracts import Priority


@dataclass(frozen=True)
class QueueState:
    """One priority queue: messages held, its hard cap, the oldest message's age."""

    priority: Priority
    depth: int
    capacity: int
    oldest_age_s: float = 0.0


class Delivery(Protocol):
    """One delivered message. Exactly one of ack/nak/term ends it."""

    @property
    def subject(self) -> str: ...

    @property
    def data(self) -> bytes: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def priority(self) -> Priority: ...

    @property
    def attempt(self) -> int:
        """1 on the first delivery."""
        ...

    @property
    def enqueued_at(self) -> float:
        """Unix time the message entered the queue (for queue-wait)."""
        ...

    async def ack(self) -> None: ...

    async def nak(self, delay_s: float) -> None: ...

    async def term(self) -> None: ...

    async def in_progress(self) -> None: ...


@dataclass(frozen=True)
class StoredDeadLetter:
    """A dead letter as stored: ``key`` is the backend's id (sequence or stream id)."""

    key: str
    data: bytes
    stored_at: float


ExhaustedCallback = Callable[[Priority, str, bytes, Mapping[str, str], int], Awaitable[None]]
"""Called with (priority, subject, data, headers, deliveries) for a message that exhausted
its deliveries by crashing or timing out; it must dead-letter it before returning."""


class JobQueue(Protocol):
    """Priority queues of jobs, one per ``Priority``."""

    name: str

    async def setup(self) -> None:
        """Create streams/groups idempotently."""
        ...

    async def publish(self, subject: str, data: bytes, msg_id: str, priority: Priority) -> bool:
        """Enqueue; ``False`` when deduplicated. Raises ``QueueFull`` at the hard cap."""
        ...

    async def states(self) -> dict[Priority, QueueState]: ...

    async def fetch(self, priority: Priority, count: int) -> list[Delivery]:
        """Up to ``count`` messages available now; never waits for more."""
        ...

    async def watch_exhausted(self, callback: ExhaustedCallback) -> None:
        """Start noticing messages that exhausted their deliveries (sweeper)."""
        ...

    async def close(self) -> None: ...


class DeadLetterStore(Protocol):
    """A dead-letter queue: append-only, with retention; entries are whole envelopes."""

    name: str

    async def add(self, data: bytes, msg_id: str) -> bool:
        """Store an entry; False: ``msg_id`` is stored already (a duplicate, dropped)."""
        ...

    async def list(self, limit: int, after: str | None) -> list[StoredDeadLetter]: ...

    async def get(self, key: str) -> StoredDeadLetter | None: ...

    async def delete(self, key: str) -> bool: ...

    async def purge(self) -> int: ...

    async def depth(self) -> int: ...


class ChatRunner(Protocol):
    """Runs one chat completion through the data plane (OpenAI request/response bodies)."""

    async def run_chat(
        self, request: dict[str, Any], *, team_id: str, api_key_id: str
    ) -> dict[str, Any]: ...


class WebhookSender(Protocol):
    """Sends one signed POST; returns (status, Retry-After seconds if any)."""

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, float | None]: ...
