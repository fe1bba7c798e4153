"""The one problem+json translation: a service's error tree, request validation, HTTP
errors (unknown route, wrong method), malformed JSON and unexpected exceptions."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import StreamingResponse
from hyperinfer.runtime import (
    PROBLEM_MEDIA_TYPE,
    Health,
    ProblemError,
    build_http_app,
    install_problem_handlers,
    problem_response,
    problem_responses,
)
from hyperinfer.runtime.logs import JsonFormatter
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, Field


# --- a service's error tree, drawn as a service would -------------------------------
class SampleError(ProblemError):
    pass


class Gone(SampleError):
    status = 410
    code = "gone-for-good"
    title = "Gone for good"


class SlowDown(SampleError):
    status = 429
    code = "slow-down"
    title = "Slow down"

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail, retry_after_s=retry_after_s, status=999, title="spoofed")
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after_s)}


class ForeignError(ProblemError):
    """A ProblemError that is not of the sample service's tree."""

    status = 418
    code = "foreign"


class Thing(BaseModel):
    name: str = Field(min_length=1)
    size: int = Field(ge=0)


def _broken_dependency() -> None:
    raise RuntimeError("dsn=postgres://user:hunter2@db")


def make_app() -> FastAPI:
    app = build_http_app(Health("sample"), CollectorRegistry())

    @app.get("/gone")
    async def gone() -> None:
        raise Gone("the thing left", thing_id="t-1")

    @app.get("/slow")
    async def slow() -> None:
        raise SlowDown("try later", 7)

    @app.get("/bare")
    async def bare() -> None:
        raise Gone()

    @app.get("/foreign")
    async def foreign() -> None:
        raise ForeignError("not ours")

    @app.post("/things", responses=problem_responses(400, 422))
    async def create(thing: Thing, dry_run: bool = Query(False)) -> Thing:
        return thing

    @app.get("/teapot")
    async def teapot() -> None:
        raise HTTPException(418, "short and stout", headers={"x-spout": "yes"})

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal state: hunter2")

    @app.get("/boom-in-dependency", dependencies=[Depends(_broken_dependency)])
    async def boom_in_dependency() -> None:
        return None

    @app.get("/boom-mid-stream")
    async def boom_mid_stream() -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"first part"
            raise RuntimeError("cut")

        return StreamingResponse(body(), media_type="text/plain")

    install_problem_handlers(app, SampleError)
    return app


@pytest.fixture
def app() -> FastAPI:
    return make_app()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sample") as c:
        yield c


@pytest.fixture
def problems_log() -> Iterator[io.StringIO]:
    """What the problem translation logs, rendered by the runtime's JSON formatter."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("sample"))
    logger = logging.getLogger("hyperinfer.runtime.problems")
    logger.addHandler(handler)
    yield out
    logger.removeHandler(handler)


def problem_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    return body


# --- the service's own errors --------------------------------------------------------
async def test_a_service_error_is_its_status_code_title_and_extensions(
    client: httpx.AsyncClient,
) -> None:
    body = problem_of(await client.get("/gone"))
    assert body == {
        "type": "urn:hyperinfer:problem:gone-for-good",
        "title": "Gone for good",
        "status": 410,
        "detail": "the thing left",
        "instance": "/gone",
        "thing_id": "t-1",
    }


async def test_an_error_without_detail_explains_itself_with_its_title(
    client: httpx.AsyncClient,
) -> None:
    assert problem_of(await client.get("/bare"))["detail"] == "Gone for good"


async def test_headers_are_sent_and_extensions_never_replace_the_standard_members(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/slow")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    body = problem_of(response)
    assert (body["title"], body["retry_after_s"]) == ("Slow down", 7)


async def test_a_problem_error_of_another_tree_is_unexpected(
    client: httpx.AsyncClient, problems_log: io.StringIO
) -> None:
    body = problem_of(await client.get("/foreign"))
    assert (body["status"], body["type"]) == (500, "urn:hyperinfer:problem:internal")
    assert "not ours" not in str(body)


# --- request validation --------------------------------------------------------------
async def test_a_body_that_is_not_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/things", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    body = problem_of(response)
    assert body["type"] == "urn:hyperinfer:problem:bad-request"
    assert body["detail"] == "the body is not valid JSON"
    assert body["instance"] == "/things"


async def test_a_field_that_breaks_the_schema_is_422_with_every_error_listed(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/things", json={"name": "", "size": -1})
    assert response.status_code == 422
    body = problem_of(response)
    assert body["type"] == "urn:hyperinfer:problem:invalid-field"
    assert body["title"] == "Invalid field"
    assert body["detail"].startswith("body.name: ")
    assert [e["loc"] for e in body["errors"]] == [["body", "name"], ["body", "size"]]
    assert {e["type"] for e in body["errors"]} == {"string_too_short", "greater_than_equal"}


async def test_a_bad_query_parameter_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/things?dry_run=perhaps", json={"name": "a", "size": 1})
    assert response.status_code == 422
    assert problem_of(response)["detail"].startswith("query.dry_run: ")


async def test_no_more_than_twenty_errors_are_listed(client: httpx.AsyncClient) -> None:
    response = await client.post("/things", json=[{"x": i} for i in range(30)])
    assert response.status_code == 422
    assert 1 <= len(problem_of(response)["errors"]) <= 20


# --- HTTP errors ---------------------------------------------------------------------
async def test_an_unknown_route_is_a_404_problem(client: httpx.AsyncClient) -> None:
    body = problem_of(await client.get("/nothing-here"))
    assert body == {
        "type": "urn:hyperinfer:problem:not-found",
        "title": "Not Found",
        "status": 404,
        "detail": "Not Found",
        "instance": "/nothing-here",
    }


async def test_a_wrong_method_is_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.delete("/things")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert problem_of(response)["type"] == "urn:hyperinfer:problem:method-not-allowed"


async def test_an_http_exception_keeps_its_status_detail_and_headers(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/teapot")
    assert response.headers["x-spout"] == "yes"
    body = problem_of(response)
    assert (body["status"], body["detail"]) == (418, "short and stout")
    assert body["type"] == "urn:hyperinfer:problem:i-m-a-teapot"


# --- unexpected errors ---------------------------------------------------------------
@pytest.mark.parametrize("path", ["/boom", "/boom-in-dependency"])
async def test_an_unexpected_error_is_a_500_that_tells_nothing_but_is_logged_with_the_request_id(
    client: httpx.AsyncClient, problems_log: io.StringIO, path: str
) -> None:
    response = await client.get(path, headers={"x-request-id": "req-42"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "req-42"
    body = problem_of(response)
    assert body == {
        "type": "urn:hyperinfer:problem:internal",
        "title": "Internal error",
        "status": 500,
        "detail": "an unexpected error occurred",
        "instance": path,
        "request_id": "req-42",
    }
    assert "hunter2" not in response.text
    [entry] = [orjson.loads(line) for line in problems_log.getvalue().splitlines()]
    assert entry["level"] == "error"
    assert (entry["request_id"], entry["path"], entry["error"]) == ("req-42", path, "RuntimeError")
    assert "hunter2" in entry["exc"]  # the traceback is in the log, for the operator


async def test_a_generated_request_id_is_the_one_logged_and_answered(
    client: httpx.AsyncClient, problems_log: io.StringIO
) -> None:
    response = await client.get("/boom")
    generated = response.headers["x-request-id"]
    assert problem_of(response)["request_id"] == generated
    [entry] = [orjson.loads(line) for line in problems_log.getvalue().splitlines()]
    assert entry["request_id"] == generated


async def test_the_service_keeps_answering_after_an_unexpected_error(
    client: httpx.AsyncClient, problems_log: io.StringIO
) -> None:
    assert (await client.get("/boom")).status_code == 500
    assert (await client.get("/health")).status_code == 200


async def test_an_error_after_the_answer_started_is_not_dressed_as_a_problem(
    client: httpx.AsyncClient, problems_log: io.StringIO
) -> None:
    with pytest.raises(RuntimeError, match="cut"):  # the server closes the connection
        await client.get("/boom-mid-stream")


# --- the pieces ----------------------------------------------------------------------
def test_problem_response_defaults_its_type_to_the_status_phrase() -> None:
    response = problem_response(503, "Down", "try later", headers={"retry-after": "3"})
    assert response.headers["retry-after"] == "3"
    assert orjson.loads(response.body) == {
        "type": "urn:hyperinfer:problem:service-unavailable",
        "title": "Down",
        "status": 503,
        "detail": "try later",
    }


def test_the_openapi_document_names_the_problem_responses(app: FastAPI) -> None:
    responses = app.openapi()["paths"]["/things"]["post"]["responses"]
    assert PROBLEM_MEDIA_TYPE in responses["400"]["content"]
    assert app.openapi()["components"]["schemas"]["Problem"]["required"] == [
        "type",
        "title",
        "status",
    ]


async def test_handlers_must_be_installed_before_the_app_starts(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sample") as c:
        await c.get("/health")
    with pytest.raises(RuntimeError, match="before the app starts"):
        install_problem_handlers(app, SampleError)
