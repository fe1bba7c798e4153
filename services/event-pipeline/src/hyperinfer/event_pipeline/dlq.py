"""Dead letters: recording them, and listing / inspecting / replaying / purging them.

Entries are ``dlq.dead_lettered`` envelopes. Ids shown to operators are
``<store>:<key>`` (``js:42`` on the JetStream DLQ stream, ``rs:1700000000000-0`` on the
Redis one), so one API covers both the pipeline's DLQ and the core-bus dead letters
that ``runtime.bus.Bus`` writes to ``hyperinfer.dlq.v1.<source>``.

A replay publishes the original message again on its job subject with a new
message id (the dedupe window would swallow the old one) and removes the dead
letter; replays are paced by a token bucket.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from hyperinfer.contracts import Envelope, Priority, names, utc_now
from hyperinfer.contracts.dlq import v1 as dlq_v1
from hyperinfer.event_pipeline.errors import (
    DlqEntryNotFound,
    InvalidEvent,
    ReplayRateLimited,
)
from hyperinfer.event_pipeline.ports import DeadLetterStore, JobQueue, StoredDeadLetter
from hyperinfer.runtime.logs import get_logger
from pydantic import ValidationError

log = get_logger(__name__)
SOURCE = "event-pipeline"
_MAX_PAYLOAD = 256 * 1024
CorePublish = Callable[[str, bytes], Awaitable[None]]


class DeadLetterer:
    """Writes ``DeadLettered`` envelopes into the pipeline's DLQ store."""

    def __init__(self, store: DeadLetterStore) -> None:
        self._store = store

    async def record(
        self,
        *,
        subject: str,
        data: bytes,
        headers: Mapping[str, str],
        reason: str,
        detail: str,
        attempts: int,
        error_class: str | None = None,
    ) -> dlq_v1.DeadLettered | None:
        """The entry written, or None: the DLQ holds it already (another replica, or the
        advisory and the recovery sweep, got there first)."""
        entry = dlq_v1.DeadLettered(
            original_subject=subject,
            original_id=headers.get("Nats-Msg-Id"),
            original_payload=data[:_MAX_PAYLOAD].decode("utf-8", "replace"),
            original_headers=dict(headers),
            reason=reason,
            error_class=error_class,
            detail=detail[:2000],
            attempts=attempts,
            source=SOURCE,
            failed_at=utc_now(),
        )
        env = Envelope[dlq_v1.DeadLettered](
            type=dlq_v1.EVENT_DEAD_LETTERED, source=SOURCE, data=entry
        )
        original = headers.get("Nats-Msg-Id") or env.id
        stored = await self._store.add(
            orjson.dumps(env.model_dump(mode="json")), f"{original}:{attempts}"
        )
        if not stored:
            return None
        log.warning(
            "job dead-lettered",
            extra={
                "subject": subject,
                "reason": reason,
                "attempts": attempts,
                "detail": detail[:300],
            },
        )
        return entry


@dataclass(frozen=True)
class DeadLetterView:
    id: str
    stored_at: float
    entry: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        data = self.entry.get("data") or {}
        return {
            "id": self.id,
            "stored_at": self.stored_at,
            "reason": data.get("reason"),
            "original_subject": data.get("original_subject"),
            "original_id": data.get("original_id"),
            "attempts": data.get("attempts"),
            "error_class": data.get("error_class"),
            "detail": (data.get("detail") or "")[:200],
            "source": data.get("source"),
        }


class TokenBucket:
    """``rate`` tokens per second, bursts of ``rate`` (at least 1)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = max(1.0, rate)
        self._tokens = self._burst
        self._clock = clock
        self._at = clock()

    def take(self) -> float:
        """0 when a token was taken, else the seconds until one is due."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self._rate


class DlqService:
    """The operator's view over one or more dead-letter stores."""

    def __init__(
        self,
        stores: Sequence[DeadLetterStore],
        queue: JobQueue,
        *,
        replay_rate_per_s: float,
        replay_max: int,
        core_publish: CorePublish | None = None,
    ) -> None:
        self._stores = {s.name: s for s in stores}
        self._queue = queue
        self._bucket = TokenBucket(replay_rate_per_s)
        self._replay_max = replay_max
        self._core_publish = core_publish

    async def depth(self) -> int:
        return sum(await asyncio.gather(*(s.depth() for s in self._stores.values())))

    async def list(self, limit: int, after: str | None = None) -> list[DeadLetterView]:
        found: list[DeadLetterView] = []
        start_store, _, start_key = (after or "").partition(":")
        passed = not after
        for name, store in self._stores.items():
            if not passed and name != start_store:
                continue
            key = start_key if not passed else None
            passed = True
            for stored in await store.list(limit - len(found), key):
                found.append(_view(name, stored))
            if len(found) >= limit:
                break
        return found

    async def inspect(self, entry_id: str) -> DeadLetterView:
        store, key = self._locate(entry_id)
        stored = await store.get(key)
        if stored is None:
            raise DlqEntryNotFound(f"no dead letter {entry_id}")
        return _view(store.name, stored)

    async def delete(self, entry_id: str) -> None:
        store, key = self._locate(entry_id)
        if not await store.delete(key):
            raise DlqEntryNotFound(f"no dead letter {entry_id}")

    async def purge(self) -> int:
        return sum(await asyncio.gather(*(s.purge() for s in self._stores.values())))

    async def replay(self, entry_id: str) -> dict[str, Any]:
        """Replay one now, or ``ReplayRateLimited`` when the bucket is empty."""
        wait = self._bucket.take()
        if wait > 0:
            raise ReplayRateLimited("replays are paced; try again shortly", max(1, round(wait)))
        return await self._replay(entry_id)

    async def replay_many(self, entry_ids: Sequence[str] | None, limit: int) -> dict[str, Any]:
        """Replay the given ids (or the oldest ``limit``), pacing to the replay rate."""
        limit = min(limit, self._replay_max)
        ids = list(entry_ids)[:limit] if entry_ids else [v.id for v in await self.list(limit)]
        replayed, failed = [], []
        for entry_id in ids:
            await self._paced()
            try:
                replayed.append(await self._replay(entry_id))
            except (DlqEntryNotFound, InvalidEvent) as exc:
                failed.append({"id": entry_id, "error": str(exc)})
        return {"replayed": replayed, "failed": failed}

    async def _paced(self) -> None:
        wait = self._bucket.take()
        while wait > 0:
            await asyncio.sleep(wait)
            wait = self._bucket.take()

    async def _replay(self, entry_id: str) -> dict[str, Any]:
        view = await self.inspect(entry_id)
        try:
            entry = dlq_v1.DeadLettered.model_validate(view.entry.get("data"))
        except ValidationError as exc:
            raise InvalidEvent(
                "not_replayable", f"{entry_id} is not a dead letter: {exc}"
            ) from None
        msg_id = f"replay-{uuid.uuid4()}"
        payload = entry.original_payload.encode()
        await self._republish(entry.original_subject, payload, msg_id, entry_id)
        await self.delete(entry_id)
        log.info("dead letter replayed", extra={"id": entry_id, "subject": entry.original_subject})
        return {"id": entry_id, "subject": entry.original_subject, "msg_id": msg_id}

    async def _republish(self, subject: str, payload: bytes, msg_id: str, entry_id: str) -> None:
        priority = job_priority(subject)
        if priority is not None:
            await self._queue.publish(subject, payload, msg_id, priority)
        elif self._core_publish is not None and not subject.startswith("$"):
            await self._core_publish(subject, payload)
        else:
            raise InvalidEvent("not_replayable", f"{entry_id}: cannot republish on {subject!r}")

    def _locate(self, entry_id: str) -> tuple[DeadLetterStore, str]:
        name, _, key = entry_id.partition(":")
        store = self._stores.get(name)
        if store is None or not key:
            raise DlqEntryNotFound(f"no dead letter {entry_id}")
        return store, key


def job_priority(subject: str) -> Priority | None:
    """The priority token of ``hyperinfer.jobs.v1.<priority>.<type>``, if it is one."""
    prefix = names.JOBS_PREFIX + "."
    if not subject.startswith(prefix):
        return None
    token = subject[len(prefix) :].split(".", 1)[0]
    try:
        return Priority(token)
    except ValueError:
        return None


def _view(store: str, stored: StoredDeadLetter) -> DeadLetterView:
    try:
        entry = orjson.loads(stored.data)
    except orjson.JSONDecodeError:
        entry = {
            "data": {
                "reason": "unreadable",
                "original_payload": stored.data.decode("utf-8", "replace"),
            }
        }
    if not isinstance(entry, dict):
        entry = {"data": {"reason": "unreadable", "original_payload": str(entry)}}
    return DeadLetterView(f"{store}:{stored.key}", stored.stored_at, entry)
