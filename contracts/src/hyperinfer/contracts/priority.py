"""Message priority, shared by the envelope and the job queues."""

from __future__ import annotations

from enum import StrEnum


class Priority(StrEnum):
    """Priority of a message; jobs are queued per priority."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"
