"""RFC 9457 problem details: the one translation of every error an admin/internal API answers.

A service draws its error tree in its ``errors.py`` from :class:`ProblemError` and calls
:func:`install_problem_handlers` once, where it adds its routes. From then on every error
leaves as ``application/problem+json``::

    what went wrong                          status   type (urn:hyperinfer:problem:<code>)
    an error of the service's tree           its own  its code, + its extensions and headers
    the body is not JSON                     400      bad-request
    a body field, query parameter, header    422      invalid-field, + ``errors`` (loc, msg,
      or path segment breaks the schema                 type) of the first 20
    an HTTPException (unknown route 404,     its own  the status phrase: not-found,
      wrong method 405, ...)                            method-not-allowed, ... + its headers
    anything else                            500      internal: logged with the request id and
                                                        the traceback; the answer tells nothing
                                                        more than the request id

Every document has ``type``, ``title``, ``status``, ``detail`` and ``instance`` (the
request path); an extension never replaces one of those members.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from hyperinfer.runtime.logs import get_logger, request_id_var
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:hyperinfer:problem:"
MAX_LISTED_ERRORS = 20

log = get_logger(__name__)


class ProblemError(Exception):
    """Base of a service's error tree; each subclass names its status, code and title.

    ``detail`` is the human-readable explanation (the title when empty); keyword
    ``extensions`` become extra members of the problem document.
    """

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str = "", **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail or self.title
        self.extensions = extensions

    @property
    def headers(self) -> dict[str, str]:
        """Response headers this problem needs (``Retry-After``, ``WWW-Authenticate``)."""
        return {}


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="urn:hyperinfer:problem:<code>")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries saying that ``statuses`` answer a :class:`Problem`."""
    described = {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}}
    return {status: described for status in statuses}


def problem_response(
    status: int,
    title: str,
    detail: str | None = None,
    code: str | None = None,
    *,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> Response:
    """One problem+json answer; ``code`` defaults to the status phrase (``not-found``)."""
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + (code or _status_code(status)),
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    for name, value in (extensions or {}).items():
        body.setdefault(name, value)
    return Response(
        orjson.dumps(body, default=str),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers or {}),
    )


def install_problem_handlers(app: FastAPI, base: type[ProblemError] = ProblemError) -> None:
    """Translate ``base`` (the service's error tree) and every other error of ``app``."""
    if app.middleware_stack is not None:
        raise RuntimeError("install problem handlers before the app starts")
    app.add_exception_handler(base, _service_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)  # last resort, for errors in middleware
    # innermost user middleware: inside the request-id middleware, so the log line and the
    # answer of an unexpected error carry the request's id
    app.user_middleware.append(Middleware(UnexpectedErrors))


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(
        exc.status,
        exc.title,
        exc.detail,
        exc.code,
        instance=request.url.path,
        headers=exc.headers,
        extensions=exc.extensions,
    )


async def _invalid_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in exc.errors()
    ]
    path = request.url.path
    if any(e["type"] == "json_invalid" for e in errors):
        return problem_response(
            400, "Bad request", "the body is not valid JSON", "bad-request", instance=path
        )
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"])
    detail = f"{where}: {first['msg']}" if where else str(first["msg"])
    listed = {"errors": errors[:MAX_LISTED_ERRORS]}
    return problem_response(
        422, "Invalid field", detail, "invalid-field", instance=path, extensions=listed
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return problem_response(
        exc.status_code,
        _status_title(exc.status_code),
        str(exc.detail),
        instance=request.url.path,
        headers=exc.headers,
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    return _unexpected_response(request.scope, exc)


class UnexpectedErrors:
    """Answer an exception no handler translated with a 500 problem, and log it once.

    An exception after the answer has started cannot change it: it goes on up (the
    server closes the connection).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            if started:
                raise
            await _unexpected_response(scope, exc)(scope, receive, send)


def _unexpected_response(scope: Scope, exc: Exception) -> Response:
    path = str(scope.get("path", ""))
    request_id = request_id_var.get() or _header(scope, b"x-request-id")
    where = {"path": path, "method": scope.get("method"), "error": type(exc).__name__}
    if request_id:
        where["request_id"] = request_id
    log.error("unexpected error", exc_info=exc, extra=where)
    return problem_response(
        500,
        "Internal error",
        "an unexpected error occurred",
        "internal",
        instance=path,
        extensions={"request_id": request_id} if request_id else None,
    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _status_title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _status_code(status: int) -> str:
    return re.sub(r"[^a-z0-9]+", "-", _status_title(status).lower()).strip("-")


__all__ = [
    "MAX_LISTED_ERRORS",
    "PROBLEM_MEDIA_TYPE",
    "TYPE_PREFIX",
    "Problem",
    "ProblemError",
    "UnexpectedErrors",
    "install_problem_handlers",
    "problem_response",
    "problem_responses",
]
