"""Errors of the telemetry service.

::

    TelemetryError                        status  (spend API, translated once in api.py)
    ├── Unauthorized                      401     no key, or a key that is not an admin's
    ├── Forbidden                         403     a team admin asked for another team
    ├── InvalidQuery                      400     a period or parameter that cannot be answered
    ├── ExportTooLarge                    400     an export over export_max_rows
    └── StoreUnavailable                  503     PostgreSQL cannot be reached right now

    StoreRejected                         the ledger store refused a batch's data (not the
                                          connection): the batch is split until the one bad
                                          event is found and dead-lettered

``StoreUnavailable`` from the ledger writer means "keep the batch, back off, retry";
the consumer never acknowledges entries it has not committed.
"""

from __future__ import annotations


class TelemetryError(Exception):
    status = 500
    title = "internal error"


class Unauthorized(TelemetryError):
    status = 401
    title = "unauthorized"


class Forbidden(TelemetryError):
    status = 403
    title = "forbidden"


class InvalidQuery(TelemetryError):
    status = 400
    title = "invalid query"


class ExportTooLarge(InvalidQuery):
    title = "export too large"


class StoreUnavailable(TelemetryError):
    status = 503
    title = "store unavailable"


class StoreRejected(Exception):
    """The store refused the data itself (a value PostgreSQL cannot hold)."""
