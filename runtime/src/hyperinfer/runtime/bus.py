"""Envelopes over core NATS: publish, subscribe, request/reply, dead-lettering.

``Bus`` is the only place a service touches NATS subjects for contract messages::

    bus = Bus(infra.require_nats(), source="quota")
    await bus.subscribe(names.QUOTA_CHECK, handle_check, queue="quota")
    await bus.publish(names.QUOTA_EXHAUSTED, quota_v1.EVENT_EXHAUSTED, event, tenant=team)

A handler is a plain async function ``handler(envelope) -> BaseModel | None``; on a
request subject the model it returns is the reply, wrapped in an envelope of type
``<request type>.reply``. A message that is not an envelope, has an unknown type or
major version, or fails validation is dead-lettered (``hyperinfer.dlq.v1.<source>``,
stored by the ``HYPERINFER_DLQ`` JetStream stream) with its reason and logged; a
requester gets an ``error`` reply. A handler that raises gets an ``error`` reply too,
and the subscription keeps running.

Trace context travels both in the envelope's ``traceparent`` and in the NATS headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from hyperinfer.contracts import (
    ContractError,
    Envelope,
    Priority,
    decode_envelope,
    names,
    utc_now,
)
from hyperinfer.contracts.dlq import v1 as dlq_v1
from hyperinfer.runtime.connections import NatsConnection
from hyperinfer.runtime.logs import get_logger
from hyperinfer.runtime.tracing import current_traceparent, extract_from
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry import trace
from pydantic import BaseModel

log = get_logger(__name__)

Handler = Callable[[Envelope[Any]], Awaitable[BaseModel | None]]
ERROR_REPLY_TYPE = "error"
_MAX_DLQ_PAYLOAD = 64 * 1024


class RequestFailed(Exception):
    """A request got an ``error`` reply: ``reason`` is a short code, ``str()`` the detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Bus:
    """Contract messages on NATS for one service (``source`` names it in envelopes)."""

    def __init__(self, nats: NatsConnection, source: str) -> None:
        self._nats = nats
        self.source = source
        self._tracer = trace.get_tracer(f"hyperinfer.{source}.bus")
        self._subscriptions: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def envelope(
        self,
        type_: str,
        data: BaseModel,
        *,
        tenant: str | None = None,
        priority: Priority = Priority.NORMAL,
    ) -> Envelope[Any]:
        """A new envelope from this service, carrying the current trace context."""
        return Envelope[Any](
            type=type_,
            source=self.source,
            tenant=tenant,
            priority=priority,
            traceparent=current_traceparent(),
            data=data,
        )

    async def publish(
        self,
        subject: str,
        type_: str,
        data: BaseModel,
        *,
        tenant: str | None = None,
        priority: Priority = Priority.NORMAL,
    ) -> Envelope[Any]:
        """Publish one event (core NATS, fire and forget) and return its envelope."""
        env = self.envelope(type_, data, tenant=tenant, priority=priority)
        await self._nats.client.publish(subject, encode(env), headers=_headers(env))
        return env

    async def request(
        self, subject: str, type_: str, data: BaseModel, *, timeout_s: float = 1.0
    ) -> Envelope[Any]:
        """Send a command and wait for its reply envelope (``RequestFailed`` on an error reply)."""
        env = self.envelope(type_, data)
        msg = await self._nats.client.request(
            subject, encode(env), timeout=timeout_s, headers=_headers(env)
        )
        return decode_reply(msg.data)

    async def subscribe(
        self,
        subject: str,
        handler: Handler,
        *,
        queue: str | None = None,
        concurrency: int = 1,
    ) -> Subscription:
        """Route ``subject`` to ``handler``; ``concurrency > 1`` handles messages in parallel."""
        gate = asyncio.Semaphore(concurrency)

        async def on_message(msg: Msg) -> None:
            if concurrency == 1:
                await self._handle(msg, handler)
                return
            await gate.acquire()
            task = asyncio.create_task(self._handle(msg, handler))
            self._tasks.add(task)
            task.add_done_callback(self._finished(gate))

        sub = await self._nats.client.subscribe(subject, queue=queue or "", cb=on_message)
        self._subscriptions.append(sub)
        return sub

    def _finished(self, gate: asyncio.Semaphore) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            gate.release()

        return done

    async def close(self, timeout_s: float = 5.0) -> None:
        """Stop receiving, then wait (bounded) for handlers still running."""
        for sub in self._subscriptions:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # connection already gone: nothing left to stop
                log.debug("unsubscribe failed: %s", exc)
        self._subscriptions.clear()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    async def _handle(self, msg: Msg, handler: Handler) -> None:
        try:
            env = decode_envelope(msg.data)
        except ContractError as exc:
            await self.dead_letter(msg, exc.reason, str(exc), type(exc).__name__)
            await _reply_error(msg, self.source, exc.reason, str(exc))
            return
        parent = extract_from(_trace_carrier(msg, env))
        with self._tracer.start_as_current_span(
            f"{env.type} receive", context=parent, kind=trace.SpanKind.CONSUMER
        ):
            try:
                reply = await handler(env)
            except Exception as exc:
                log.exception("handler failed", extra={"subject": msg.subject, "type": env.type})
                detail = f"{type(exc).__name__}: {exc}"
                await _reply_error(msg, self.source, "handler_error", detail)
                return
            if msg.reply and reply is not None:
                out = self.envelope(f"{env.type}.reply", reply, tenant=env.tenant)
                await msg.respond(encode(out))

    async def dead_letter(
        self, msg: Msg, reason: str, detail: str, error_class: str | None = None
    ) -> None:
        """Store ``msg`` in the DLQ stream with why; log it whatever happens."""
        entry = dlq_v1.DeadLettered(
            original_subject=msg.subject,
            original_id=(msg.headers or {}).get("Nats-Msg-Id"),
            original_payload=msg.data[:_MAX_DLQ_PAYLOAD].decode("utf-8", "replace"),
            original_headers=dict(msg.headers or {}),
            reason=reason,
            error_class=error_class,
            detail=detail[:2000],
            source=self.source,
            failed_at=utc_now(),
        )
        env = self.envelope(dlq_v1.EVENT_DEAD_LETTERED, entry)
        log.warning(
            "message dead-lettered",
            extra={"subject": msg.subject, "reason": reason, "detail": detail[:500]},
        )
        try:
            await self._nats.jetstream.publish(
                names.dlq_subject(self.source), encode(env), timeout=2, headers=_headers(env)
            )
        except Exception as exc:  # no DLQ stream or NATS down: the log line above is the record
            log.error("dead-letter publish failed", extra={"error": f"{type(exc).__name__}: {exc}"})


def encode(env: Envelope[Any]) -> bytes:
    """The wire form of an envelope (compact JSON)."""
    return orjson.dumps(env.model_dump(mode="json"))


def decode_reply(raw: bytes) -> Envelope[Any]:
    """A reply envelope; an ``error`` reply raises ``RequestFailed``."""
    body = orjson.loads(raw)
    if isinstance(body, dict) and body.get("type") == ERROR_REPLY_TYPE:
        data = body.get("data") or {}
        raise RequestFailed(str(data.get("reason", "error")), str(data.get("detail", "")))
    return decode_envelope(raw)


async def _reply_error(msg: Msg, source: str, reason: str, detail: str) -> None:
    """Answer a failed request with an ``error`` envelope (``data``: reason, detail)."""
    if not msg.reply:
        return
    env = Envelope[dict[str, str]](
        type=ERROR_REPLY_TYPE, source=source, data={"reason": reason, "detail": detail[:2000]}
    )
    await msg.respond(orjson.dumps(env.model_dump(mode="json")))


def _headers(env: Envelope[Any]) -> dict[str, str]:
    headers = {"Nats-Msg-Id": env.id, "Hyperinfer-Type": env.type}
    if env.traceparent:
        headers["traceparent"] = env.traceparent
    return headers


def _trace_carrier(msg: Msg, env: Envelope[Any]) -> dict[str, str]:
    carrier = dict(msg.headers or {})
    if "traceparent" not in carrier and env.traceparent:
        carrier["traceparent"] = env.traceparent
    return carrier
