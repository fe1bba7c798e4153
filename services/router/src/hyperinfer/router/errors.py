"""Router errors, translated once into RFC 9457 problem+json by ``api``.

RouterError                  500
 ├── InvalidRequest          400  a query parameter is missing or malformed
 ├── Unauthorized            401  no or wrong admin key / X-Internal-Key
 └── UnknownAlias            404  the alias is not in the config snapshot
"""

from __future__ import annotations


class RouterError(Exception):
    status = 500
    title = "router error"


class InvalidRequest(RouterError):
    status = 400
    title = "invalid request"


class Unauthorized(RouterError):
    status = 401
    title = "unauthorized"


class UnknownAlias(RouterError):
    status = 404
    title = "unknown alias"
