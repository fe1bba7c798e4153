"""The config service's exception tree, translated once into RFC 9457 problem+json.

::

    ConfigError                    status  type (``urn:hyperinfer:problem:<code>``)
    ├── BadRequest                 400     bad-request           malformed body or query
    │   ├── InvalidField           422     invalid-field         a value breaks a rule
    │   └── PayloadTooLarge        413     payload-too-large     body over the size limit
    ├── Unauthenticated            401     unauthenticated       no or unknown credentials
    ├── Forbidden                  403     forbidden             known caller, not allowed
    ├── NotFound                   404     not-found             absent, or not yours to see
    ├── Conflict                   409     conflict              duplicate name, object in use
    ├── PreconditionFailed         412     precondition-failed   If-Match names an old version
    └── Unavailable                503     unavailable           PostgreSQL unreachable

Handlers raise these with a detail and, as keywords, extension members (``field``,
``current_version``); the runtime's problem handlers (installed by ``api.install``) turn
each into one problem document. Nothing else in the service builds an error response.
"""

from __future__ import annotations

from hyperinfer.runtime.problems import ProblemError


class ConfigError(ProblemError):
    """Base of every error the config service raises on purpose."""


class BadRequest(ConfigError):
    status = 400
    code = "bad-request"
    title = "Bad request"


class InvalidField(BadRequest):
    status = 422
    code = "invalid-field"
    title = "Invalid field"


class PayloadTooLarge(BadRequest):
    status = 413
    code = "payload-too-large"
    title = "Payload too large"


class Unauthenticated(ConfigError):
    status = 401
    code = "unauthenticated"
    title = "Unauthenticated"


class Forbidden(ConfigError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(ConfigError):
    status = 404
    code = "not-found"
    title = "Not found"


class Conflict(ConfigError):
    status = 409
    code = "conflict"
    title = "Conflict"


class PreconditionFailed(ConfigError):
    status = 412
    code = "precondition-failed"
    title = "Precondition failed"


class Unavailable(ConfigError):
    status = 503
    code = "unavailable"
    title = "Service unavailable"
