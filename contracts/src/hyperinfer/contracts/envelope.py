"""The envelope every HyperInfer message travels in.

``Envelope[DataT]`` is generic over its payload; ``RawEnvelope`` keeps ``data`` as a
plain dict for routers that look at ``type``/``schema_version`` before choosing a model.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from hyperinfer.contracts.priority import Priority
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

DataT = TypeVar("DataT")


def new_event_id() -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, version 7, random tail."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Envelope(BaseModel, Generic[DataT]):
    """One message: metadata plus a typed ``data`` payload."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(default_factory=new_event_id, min_length=1, max_length=64)
    type: str = Field(min_length=1, max_length=128, description="event type, e.g. usage.recorded")
    schema_version: int = Field(default=1, ge=1, description="major version of the data schema")
    source: str = Field(min_length=1, max_length=128, description="emitting service or client")
    time: AwareDatetime = Field(default_factory=utc_now)
    priority: Priority = Priority.NORMAL
    tenant: str | None = Field(default=None, max_length=128, description="team id, if any")
    expires_at: AwareDatetime | None = None
    traceparent: str | None = Field(default=None, max_length=128)
    data: DataT


class RawEnvelope(Envelope[dict[str, Any]]):
    """An envelope whose payload has not been bound to a model yet."""
