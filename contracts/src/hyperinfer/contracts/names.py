"""Every subject, stream, bucket, Redis key and channel HyperInfer uses, in one place.

NATS subjects carry the major version: ``hyperinfer.<domain>.v1.<event>``.
Redis keys and streams start with ``hyperinfer:``. Keys that one Lua script touches
together share a hash tag ``{t:<team>}`` so they live in one Redis Cluster slot.
"""

from __future__ import annotations

from typing import Final

from hyperinfer.contracts.priority import Priority

# --- NATS subjects -----------------------------------------------------------------
CONFIG_CHANGED: Final = "hyperinfer.config.v1.changed"

USAGE_RECORDED: Final = "hyperinfer.usage.v1.recorded"
USAGE_ROLLUP: Final = "hyperinfer.usage.v1.rollup"

QUOTA_CHECK: Final = "hyperinfer.quota.v1.check"
QUOTA_RESERVE: Final = "hyperinfer.quota.v1.reserve"
QUOTA_SETTLE: Final = "hyperinfer.quota.v1.settle"
QUOTA_THRESHOLD_CROSSED: Final = "hyperinfer.quota.v1.threshold_crossed"
QUOTA_EXHAUSTED: Final = "hyperinfer.quota.v1.exhausted"
QUOTA_POLICY_SWITCHED: Final = "hyperinfer.quota.v1.policy_switched"

GPU_METRICS_PREFIX: Final = "hyperinfer.gpu.v1.metrics"
BACKEND_STATE_PREFIX: Final = "hyperinfer.backend.v1.state"

ROUTING_TABLE: Final = "hyperinfer.router.v1.table"
ROUTER_RESOLVE: Final = "hyperinfer.router.v1.resolve"

JOBS_PREFIX: Final = "hyperinfer.jobs.v1"
DLQ_PREFIX: Final = "hyperinfer.dlq.v1"


def gpu_metrics_subject(node: str) -> str:
    """``hyperinfer.gpu.v1.metrics.<node>``."""
    return f"{GPU_METRICS_PREFIX}.{subject_token(node)}"


def backend_state_subject(backend: str) -> str:
    """``hyperinfer.backend.v1.state.<backend>``."""
    return f"{BACKEND_STATE_PREFIX}.{subject_token(backend)}"


def job_subject(priority: Priority, job_type: str) -> str:
    """``hyperinfer.jobs.v1.<priority>.<type>`` (type like ``inference.requested``)."""
    return f"{JOBS_PREFIX}.{priority.value}.{job_type}"


def dlq_subject(source: str) -> str:
    """``hyperinfer.dlq.v1.<source>``: where a component dead-letters a message."""
    return f"{DLQ_PREFIX}.{subject_token(source)}"


def subject_token(value: str) -> str:
    """Make ``value`` safe as one NATS subject token (no dots, spaces or wildcards)."""
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in value)
    return cleaned or "_"


# --- JetStream streams, consumers and KV buckets -------------------------------------
def jobs_stream(priority: Priority) -> str:
    """One work-queue stream per priority, e.g. ``HYPERINFER_JOBS_HIGH``."""
    return f"HYPERINFER_JOBS_{priority.name}"


DLQ_STREAM: Final = "HYPERINFER_DLQ"
USAGE_STREAM_NATS: Final = "HYPERINFER_USAGE"

# --- Redis keys, streams and channels -----------------------------------------------
REDIS_PREFIX: Final = "hyperinfer:"
# Versioned documents are Redis hashes with fields ``version`` and ``document``
# (one key, one Cluster slot); a notice on the channel announces each new version.
CONFIG_SNAPSHOT_KEY: Final = "hyperinfer:config"
CONFIG_UPDATES_CHANNEL: Final = "hyperinfer:config_updates"
USAGE_STREAM: Final = "hyperinfer:usage"
USAGE_DLQ_STREAM: Final = "hyperinfer:usage:dlq"
USAGE_STREAM_FIELD: Final = "envelope"  # one field per entry: the JSON envelope
USAGE_CONSUMER_GROUP: Final = "telemetry"
QUOTA_USAGE_CONSUMER_GROUP: Final = "quota"
ROUTING_TABLE_KEY: Final = "hyperinfer:routing:table"
ROUTING_UPDATES_CHANNEL: Final = "hyperinfer:routing_updates"
ROUTING_TABLE_SEQ_KEY: Final = "hyperinfer:routing:table:seq"  # INCR: next table version
ROUTER_LEADER_KEY: Final = "hyperinfer:router:leader"  # lease: which router replica publishes
CACHE_PREFIX: Final = "hyperinfer:cache:"
NODES_KEY: Final = "hyperinfer:nodes"
# Written once per Redis lifetime by the quota service: missing means Redis lost its
# data (restart without persistence, flush) and budgets must be reloaded.
QUOTA_EPOCH_KEY: Final = "hyperinfer:quota:epoch"
JOBS_REDIS_DLQ_STREAM: Final = "hyperinfer:jobs:dlq"


def tenant_tag(team_id: str) -> str:
    """The Redis Cluster hash tag of a team: every quota key of a team shares it."""
    return "{t:" + team_id + "}"


def quota_key(team_id: str, *parts: str) -> str:
    """``hyperinfer:quota:{t:<team>}:<parts...>`` — one slot per team."""
    return ":".join(("hyperinfer:quota", tenant_tag(team_id), *parts))


def jobs_redis_stream(priority: Priority) -> str:
    """Redis Streams backend of the event pipeline: ``hyperinfer:jobs:<priority>``."""
    return f"hyperinfer:jobs:{priority.value}"
