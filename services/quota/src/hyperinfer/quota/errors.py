"""The quota service's own exceptions.

::

    QuotaServiceError                 base of everything raised on purpose here
    └── MalformedCommand              a well-formed envelope of the wrong type on a
                                      quota subject (answered with an ``error`` reply)

Expected infrastructure failures are not wrapped: Redis, PostgreSQL and NATS
errors are caught by the loops (one log line, back off, retry); limit decisions
travel as ``QuotaDecision`` replies, including ``redis_unavailable``.
"""

from __future__ import annotations


class QuotaServiceError(Exception):
    """Base of the quota service's errors."""


class MalformedCommand(QuotaServiceError):
    """A command whose type does not belong on the subject it was sent to."""
