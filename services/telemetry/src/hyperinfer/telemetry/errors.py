"""Errors of the telemetry service.

::

    TelemetryError             status  type (urn:hyperinfer:problem:<code>; spend API,
    │                                  translated once by the runtime's problem handlers)
    ├── Unauthorized           401     unauthorized       no key, or a key that is not an
    │                                                     admin's (+ WWW-Authenticate: Bearer)
    ├── Forbidden              403     forbidden          a team admin asked for another team
    ├── InvalidQuery           400     invalid-query      a period or parameter that cannot
    │   │                                                 be answered
    │   └── ExportTooLarge     400     export-too-large   an export over export_max_rows
    └── StoreUnavailable       503     store-unavailable  PostgreSQL cannot be reached right now

A query parameter that breaks the schema (``limit=0``, ``start=yesterday``) is the
runtime's 422 ``invalid-field``, not an ``InvalidQuery``.

    StoreRejected                         the ledger store refused a batch's data (not the
                                          connection): the batch is split until the one bad
                                          event is found and dead-lettered

``StoreUnavailable`` from the ledger writer means "keep the batch, back off, retry";
the consumer never acknowledges entries it has not committed.
"""

from __future__ import annotations

from hyperinfer.runtime.problems import ProblemError


class TelemetryError(ProblemError):
    title = "internal error"


class Unauthorized(TelemetryError):
    status = 401
    code = "unauthorized"
    title = "unauthorized"

    @property
    def headers(self) -> dict[str, str]:
        return {"www-authenticate": "Bearer"}


class Forbidden(TelemetryError):
    status = 403
    code = "forbidden"
    title = "forbidden"


class InvalidQuery(TelemetryError):
    status = 400
    code = "invalid-query"
    title = "invalid query"


class ExportTooLarge(InvalidQuery):
    code = "export-too-large"
    title = "export too large"


class StoreUnavailable(TelemetryError):
    status = 503
    code = "store-unavailable"
    title = "store unavailable"


class StoreRejected(Exception):
    """The store refused the data itself (a value PostgreSQL cannot hold)."""
