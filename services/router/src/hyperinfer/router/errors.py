"""Router errors, translated once into RFC 9457 problem+json by the runtime's problem
handlers (installed in ``api.mount``).

::

    RouterError              status  type (urn:hyperinfer:problem:<code>)
    ├── InvalidRequest       400     invalid-request  a query parameter the schema lets
    │                                                 through but the router cannot use
    ├── Unauthorized         401     unauthorized     no or wrong admin key / X-Internal-Key
    └── UnknownAlias         404     unknown-alias    the alias is not in the config snapshot

A query parameter that breaks the schema (missing, too long) is the runtime's 422.
"""

from __future__ import annotations

from hyperinfer.runtime.problems import ProblemError


class RouterError(ProblemError):
    title = "router error"


class InvalidRequest(RouterError):
    status = 400
    code = "invalid-request"
    title = "invalid request"


class Unauthorized(RouterError):
    status = 401
    code = "unauthorized"
    title = "unauthorized"


class UnknownAlias(RouterError):
    status = 404
    code = "unknown-alias"
    title = "unknown alias"
