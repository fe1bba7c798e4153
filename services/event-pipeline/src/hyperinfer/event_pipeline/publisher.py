"""Producers' door: validate an envelope against the registry, admit by priority, publish.

``POST /internal/events``, the processors' derived events and replays all go through
a ``JobQueue``; only this door applies admission control (raw publishers on the bus
meet only the hard cap, ``discard: new``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from hyperinfer.contracts import ContractError, Envelope, Priority, decode_envelope, names, spec_for
from hyperinfer.event_pipeline.domain import AdmissionPolicy
from hyperinfer.event_pipeline.errors import InvalidEvent, QueueFull
from hyperinfer.event_pipeline.metrics import PipelineMetrics
from hyperinfer.event_pipeline.ports import JobQueue, QueueState
from pydantic import BaseModel

_DERIVED = uuid.UUID("6f1c1c52-7d0e-4a4b-9a43-1b0f6a9e0c11")


def derived_id(parent_id: str, purpose: str) -> str:
    """A stable event id for an event derived from ``parent_id`` (retries publish the same)."""
    return str(uuid.uuid5(_DERIVED, f"{parent_id}:{purpose}"))


@dataclass(frozen=True)
class Published:
    id: str
    subject: str
    priority: Priority
    duplicate: bool


class StateCache:
    """Queue states, refreshed at most every ``max_age_s`` (one refresh at a time)."""

    def __init__(self, queue: JobQueue, max_age_s: float) -> None:
        self._queue = queue
        self._max_age_s = max_age_s
        self._states: dict[Priority, QueueState] | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> dict[Priority, QueueState]:
        if self._states is not None and time.monotonic() - self._at < self._max_age_s:
            return self._states
        async with self._lock:
            if self._states is None or time.monotonic() - self._at >= self._max_age_s:
                self._states = await self._queue.states()
                self._at = time.monotonic()
        return self._states


class EventPublisher:
    """Validates, admits and publishes job envelopes."""

    def __init__(
        self,
        queue: JobQueue,
        policy: AdmissionPolicy,
        states: StateCache,
        metrics: PipelineMetrics,
    ) -> None:
        self._queue = queue
        self._policy = policy
        self._states = states
        self._metrics = metrics

    async def submit(self, raw: bytes) -> Published:
        """An envelope from outside: validated, admitted, published."""
        env = _validate(raw)
        decision = self._policy.decide(env.priority, await self._states.get())
        if not decision.admitted:
            self._reject(env.priority, "admission")
            raise QueueFull(
                env.priority,
                f"{env.priority.value} refused: queues {decision.fill:.0%} full "
                f"(limit {decision.threshold:.0%} for this priority)",
                decision.retry_after_s,
            )
        return await self._publish(env, raw)

    async def emit(
        self,
        type_: str,
        data: BaseModel,
        *,
        event_id: str,
        priority: Priority = Priority.NORMAL,
        tenant: str | None = None,
    ) -> Published:
        """A derived event from a processor: no admission (only the hard cap applies)."""
        env = Envelope[Any](
            id=event_id,
            type=type_,
            source="event-pipeline",
            priority=priority,
            tenant=tenant,
            data=data,
        )
        return await self._publish(env, orjson.dumps(env.model_dump(mode="json")))

    async def _publish(self, env: Envelope[Any], raw: bytes) -> Published:
        subject = names.job_subject(env.priority, env.type)
        try:
            fresh = await self._queue.publish(subject, raw, env.id, env.priority)
        except QueueFull:
            self._reject(env.priority, "hard_cap")
            raise
        outcome = "accepted" if fresh else "duplicate"
        self._metrics.published.labels(env.priority.value, outcome).inc()
        self._metrics.count(f"published_{outcome}")
        return Published(env.id, subject, env.priority, not fresh)

    def _reject(self, priority: Priority, reason: str) -> None:
        self._metrics.rejected.labels(priority.value, reason).inc()
        self._metrics.count(f"rejected_{reason}")


def _validate(raw: bytes) -> Envelope[Any]:
    try:
        env = decode_envelope(raw)
    except ContractError as exc:
        raise InvalidEvent(exc.reason, str(exc)) from None
    spec = spec_for(env.type, env.schema_version)
    if spec.transport != "jetstream" or not spec.channel.startswith(names.JOBS_PREFIX):
        raise InvalidEvent("not_a_job", f"{env.type} is not a job type")
    return env
