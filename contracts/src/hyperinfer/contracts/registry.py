"""The catalogue of message types: type → payload model, channel, and who speaks it.

It drives schema snapshots, the AsyncAPI document and ``decode_envelope``, which
turns bytes into a typed envelope or raises a ``ContractError`` for the DLQ.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any, Literal

from hyperinfer.contracts import names
from hyperinfer.contracts.backend import v1 as backend_v1
from hyperinfer.contracts.config import v1 as config_v1
from hyperinfer.contracts.dlq import v1 as dlq_v1
from hyperinfer.contracts.envelope import Envelope, RawEnvelope
from hyperinfer.contracts.errors import (
    InvalidMessage,
    UnknownMessageType,
    UnsupportedSchemaVersion,
)
from hyperinfer.contracts.gpu import v1 as gpu_v1
from hyperinfer.contracts.jobs import v1 as jobs_v1
from hyperinfer.contracts.quota import v1 as quota_v1
from hyperinfer.contracts.routing import v1 as routing_v1
from hyperinfer.contracts.usage import v1 as usage_v1
from pydantic import BaseModel, ValidationError

Transport = Literal[
    "nats", "jetstream", "redis_stream", "redis_pubsub", "redis_key", "nats_request"
]


@dataclass(frozen=True)
class MessageSpec:
    """One message type at one major version."""

    type: str
    version: int
    model: builtins.type[BaseModel]
    channel: str
    transport: Transport
    publisher: str
    subscribers: tuple[str, ...]
    summary: str
    reply: builtins.type[BaseModel] | None = None
    also_on: tuple[tuple[str, Transport], ...] = ()


_JOB_CHANNEL = names.JOBS_PREFIX + ".{priority}."

MESSAGES: tuple[MessageSpec, ...] = (
    MessageSpec(
        config_v1.EVENT_CHANGED,
        1,
        config_v1.ConfigChanged,
        names.CONFIG_CHANGED,
        "nats",
        "config",
        ("ingress", "quota", "router", "event-pipeline"),
        "A governance change was committed; fetch the snapshot at this version.",
        also_on=((names.CONFIG_UPDATES_CHANNEL, "redis_pubsub"),),
    ),
    MessageSpec(
        "config.snapshot",
        1,
        config_v1.ConfigSnapshot,
        names.CONFIG_SNAPSHOT_KEY,
        "redis_key",
        "config",
        ("ingress", "client"),
        "The full data-plane config at one version (Redis key + pub/sub notice).",
    ),
    MessageSpec(
        usage_v1.EVENT_RECORDED,
        1,
        usage_v1.UsageRecorded,
        names.USAGE_STREAM,
        "redis_stream",
        "ingress",
        ("telemetry", "quota"),
        "One request's usage and cost, idempotent by request_id.",
    ),
    MessageSpec(
        usage_v1.EVENT_ROLLUP,
        1,
        usage_v1.UsageRollup,
        names.USAGE_ROLLUP,
        "nats",
        "telemetry",
        ("router", "quota"),
        "Per-minute usage summaries.",
    ),
    MessageSpec(
        quota_v1.COMMAND_CHECK,
        1,
        quota_v1.ReserveQuota,
        names.QUOTA_CHECK,
        "nats_request",
        "client",
        ("quota",),
        "Check limits without reserving.",
        reply=quota_v1.QuotaDecision,
    ),
    MessageSpec(
        quota_v1.COMMAND_RESERVE,
        1,
        quota_v1.ReserveQuota,
        names.QUOTA_RESERVE,
        "nats_request",
        "client",
        ("quota",),
        "Reserve a request's share of limits.",
        reply=quota_v1.QuotaDecision,
    ),
    MessageSpec(
        quota_v1.COMMAND_SETTLE,
        1,
        quota_v1.SettleQuota,
        names.QUOTA_SETTLE,
        "nats_request",
        "client",
        ("quota",),
        "Settle a reservation with actual usage.",
        reply=quota_v1.SettleResult,
    ),
    MessageSpec(
        quota_v1.EVENT_THRESHOLD_CROSSED,
        1,
        quota_v1.QuotaThresholdCrossed,
        names.QUOTA_THRESHOLD_CROSSED,
        "nats",
        "quota",
        ("event-pipeline",),
        "Budget spend crossed 80% or 100% of a limit.",
    ),
    MessageSpec(
        quota_v1.EVENT_EXHAUSTED,
        1,
        quota_v1.QuotaExhausted,
        names.QUOTA_EXHAUSTED,
        "nats",
        "quota",
        ("event-pipeline",),
        "A budget is exhausted.",
    ),
    MessageSpec(
        quota_v1.EVENT_POLICY_SWITCHED,
        1,
        quota_v1.QuotaPolicySwitched,
        names.QUOTA_POLICY_SWITCHED,
        "nats",
        "ingress",
        ("telemetry",),
        "A node switched between Redis and its Redis-down failure policy.",
    ),
    MessageSpec(
        gpu_v1.EVENT_METRICS,
        1,
        gpu_v1.GpuMetricsReported,
        names.GPU_METRICS_PREFIX + ".{node}",
        "nats",
        "gpu-collector",
        ("router",),
        "One NVML poll of a node, or a no_gpu heartbeat.",
    ),
    MessageSpec(
        backend_v1.EVENT_STATE,
        1,
        backend_v1.BackendStateReported,
        names.BACKEND_STATE_PREFIX + ".{backend}",
        "nats",
        "gpu-collector",
        ("router",),
        "Engine state of a self-hosted backend (vLLM, Triton).",
    ),
    MessageSpec(
        routing_v1.EVENT_TABLE,
        1,
        routing_v1.RoutingTablePublished,
        names.ROUTING_TABLE,
        "nats",
        "router",
        ("ingress", "client"),
        "A new versioned routing table.",
        also_on=(
            (names.ROUTING_TABLE_KEY, "redis_key"),
            (names.ROUTING_UPDATES_CHANNEL, "redis_pubsub"),
        ),
    ),
    MessageSpec(
        routing_v1.COMMAND_RESOLVE,
        1,
        routing_v1.ResolveRoute,
        names.ROUTER_RESOLVE,
        "nats_request",
        "client",
        ("router",),
        "Ask the router to choose a backend.",
        reply=routing_v1.RouteResolution,
    ),
    MessageSpec(
        jobs_v1.TYPE_INFERENCE_REQUESTED,
        1,
        jobs_v1.InferenceRequested,
        _JOB_CHANNEL + jobs_v1.TYPE_INFERENCE_REQUESTED,
        "jetstream",
        "any",
        ("event-pipeline",),
        "Run a chat request asynchronously.",
    ),
    MessageSpec(
        jobs_v1.TYPE_INFERENCE_COMPLETED,
        1,
        jobs_v1.InferenceCompleted,
        _JOB_CHANNEL + jobs_v1.TYPE_INFERENCE_COMPLETED,
        "jetstream",
        "event-pipeline",
        ("any",),
        "An asynchronous chat job finished.",
    ),
    MessageSpec(
        jobs_v1.TYPE_WEBHOOK_DELIVER,
        1,
        jobs_v1.WebhookDeliver,
        _JOB_CHANNEL + jobs_v1.TYPE_WEBHOOK_DELIVER,
        "jetstream",
        "any",
        ("event-pipeline",),
        "Deliver a signed outbound callback.",
    ),
    MessageSpec(
        jobs_v1.TYPE_AUDIT_RECORD,
        1,
        jobs_v1.AuditRecord,
        _JOB_CHANNEL + jobs_v1.TYPE_AUDIT_RECORD,
        "jetstream",
        "any",
        ("event-pipeline",),
        "Record an audit entry.",
    ),
    MessageSpec(
        jobs_v1.TYPE_QUOTA_ALERT,
        1,
        jobs_v1.QuotaAlert,
        _JOB_CHANNEL + jobs_v1.TYPE_QUOTA_ALERT,
        "jetstream",
        "quota",
        ("event-pipeline",),
        "Fan a quota alert out to its subscribers.",
    ),
    MessageSpec(
        dlq_v1.EVENT_DEAD_LETTERED,
        1,
        dlq_v1.DeadLettered,
        names.DLQ_PREFIX + ".{source}",
        "jetstream",
        "any",
        ("event-pipeline",),
        "A message that could not be processed.",
    ),
)

_BY_TYPE: dict[tuple[str, int], MessageSpec] = {(m.type, m.version): m for m in MESSAGES}


def spec_for(message_type: str, version: int = 1) -> MessageSpec:
    """The spec of a type at a major version, or ``UnknownMessageType``/``Unsupported...``."""
    spec = _BY_TYPE.get((message_type, version))
    if spec is not None:
        return spec
    if any(t == message_type for t, _ in _BY_TYPE):
        raise UnsupportedSchemaVersion(f"{message_type} has no schema version {version}")
    raise UnknownMessageType(f"unknown message type {message_type!r}")


def decode_envelope(raw: bytes | str) -> Envelope[Any]:
    """Parse and validate bytes into an envelope whose ``data`` is the registered model."""
    try:
        envelope = RawEnvelope.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidMessage(f"not a valid envelope: {_first_error(exc)}") from exc
    model = model_for(envelope.type, envelope.schema_version)
    try:
        data = model.model_validate(envelope.data)
    except ValidationError as exc:
        where = f"{envelope.type} v{envelope.schema_version}"
        raise InvalidMessage(f"invalid {where}: {_first_error(exc)}") from exc
    return Envelope[Any](**{**envelope.model_dump(exclude={"data"}), "data": data})


REPLY_SUFFIX = ".reply"


def model_for(message_type: str, version: int = 1) -> builtins.type[BaseModel]:
    """The payload model of a type; ``<command>.reply`` is the command's reply model."""
    if message_type.endswith(REPLY_SUFFIX):
        spec = spec_for(message_type.removesuffix(REPLY_SUFFIX), version)
        if spec.reply is None:
            raise UnknownMessageType(f"{spec.type} has no reply")
        return spec.reply
    return spec_for(message_type, version).model


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "body"
    return f"{where}: {err.get('msg', 'invalid')} ({exc.error_count()} error(s))"
