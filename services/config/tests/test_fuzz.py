"""Property-based tests of the admin API: whatever arrives, the answer is a documented
status (never 5xx), errors are problem+json, and a refused request changes nothing.

- schemathesis generates valid and invalid requests for every operation of the service's
  own OpenAPI document and runs them in-process over ASGI (one service, real PG/Redis/NATS);
- hypothesis aims malformed, mistyped and oversized bodies at the create endpoints.

Example counts are bounded so the whole module runs in well under a minute.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import schemathesis
from fastapi import FastAPI
from hyperinfer.config.app import create_app
from hyperinfer.config.settings import ConfigSettings
from hyperinfer.config.testing import TEST_ADMIN_KEY
from hyperinfer.runtime import Service
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

AUTH = {"authorization": f"Bearer {TEST_ADMIN_KEY}"}
PROBLEM = "application/problem+json"
EXAMPLES = 8
# a refusal may also be 412 (If-Match) or 413 (body over the limit)
REJECTED = ["400", "401", "403", "404", "405", "406", "409", "412", "413", "415", "422", "428"]
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {"negative_data_rejection": {"expected-statuses": REJECTED}},
        "auth": {"openapi": {"HTTPBearer": {"bearer": TEST_ADMIN_KEY}}},
    }
)


def committed_version(dsn: str) -> int:
    async def read() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM config_state"))
        finally:
            await conn.close()

    return asyncio.run(read())


@pytest.fixture
def lifespan_app(settings: ConfigSettings) -> Iterator[FastAPI]:
    """The service's app, started and stopped by schemathesis' ASGI client (its own loop)."""
    service = create_app(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.startup()
        yield
        await service.shutdown()

    service.app.router.lifespan_context = lifespan
    yield service.app
    shutdown_lifespans()


def test_every_operation_against_the_openapi_document(
    lifespan_app: FastAPI, postgres_dsn: str
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", lifespan_app, config=CONFIG)
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30
    negative = 0
    positive: Counter[int] = Counter()
    refused: Counter[int] = Counter()
    for operation in operations:
        _exercise(operation, GenerationMode.POSITIVE, checks, postgres_dsn, positive)
        try:
            _exercise(operation, GenerationMode.NEGATIVE, checks, postgres_dsn, refused)
            negative += 1
        except Unsatisfiable:  # nothing to get wrong: no parameters, no body
            assert not operation.body, operation.label
            assert not list(operation.iter_parameters()), operation.label
    assert negative > 25
    # the requests reached the handlers: valid ones authenticated, many accepted
    assert positive[401] == 0, positive
    assert sum(n for status, n in positive.items() if status < 300) > 50, positive
    assert refused[400] + refused[422] > 50, refused


def _exercise(
    operation: Any, mode: GenerationMode, checks: list[Any], dsn: str, statuses: Counter[int]
) -> None:
    extra = [negative_data_rejection] if mode is GenerationMode.NEGATIVE else []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        before = committed_version(dsn)
        response = case.call()
        statuses[response.status_code] += 1
        case.validate_response(response, checks=[*checks, *extra])
        if response.status_code >= 400:
            assert response.headers["content-type"] == [PROBLEM], case.as_curl_command()
            assert committed_version(dsn) == before, (
                f"a refused request changed config: {case.as_curl_command()}"
            )

    run()


# --- targeted bodies -----------------------------------------------------------------
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "id",
    "name",
    "kind",
    "team_id",
    "targets",
    "scope",
    "subject_id",
    "rpm",
    "budget_micros",
    "credentials",
    "scopes",
    "expires_at",
    "email",
    "role",
    "models",
    "weight",
    "strategy",
]
NEAR_MISS = st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6)
ENDPOINTS = ["teams", "users", "keys", "aliases", "quotas", "backends", "routing-rules"]


@pytest.fixture
async def started(settings: ConfigSettings) -> AsyncIterator[Service]:
    service = create_app(settings.model_copy(update={"max_body_bytes": 4096}))
    await service.startup()
    yield service
    await service.shutdown()


def _client(service: Service) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.app), base_url="http://config", headers=AUTH
    )


FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(endpoint=st.sampled_from(ENDPOINTS), body=NEAR_MISS | JSON)
async def test_mistyped_bodies_are_refused_cleanly(
    started: Service, postgres_dsn: str, endpoint: str, body: Any
) -> None:
    async with _client(started) as client:
        before = await client.get("/v1/config/version")
        r = await client.post(f"/v1/admin/{endpoint}", json=body)
        after = await client.get("/v1/config/version")
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert r.headers["content-type"] == PROBLEM
        assert r.json()["status"] == r.status_code
        assert after.json()["version"] == before.json()["version"]


@FUZZ
@given(endpoint=st.sampled_from(ENDPOINTS), raw=st.binary(max_size=300))
async def test_garbage_bytes_are_400_or_422(started: Service, endpoint: str, raw: bytes) -> None:
    async with _client(started) as client:
        r = await client.post(
            f"/v1/admin/{endpoint}", content=raw, headers={"content-type": "application/json"}
        )
        version = (await client.get("/v1/config/version")).json()["version"]
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        assert r.status_code == (422 if raw == b"" else 400), r.text  # no body: a missing field
    assert r.status_code in (400, 422), r.text
    assert r.headers["content-type"] == PROBLEM
    assert version == 0


@settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(endpoint=st.sampled_from(ENDPOINTS), size=st.integers(4097, 200_000), chunked=st.booleans())
async def test_oversized_bodies_are_413(
    started: Service, endpoint: str, size: int, chunked: bool
) -> None:
    payload = orjson.dumps({"name": "x" * size})

    async def stream() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 1000):
            yield payload[i : i + 1000]

    async with _client(started) as client:
        content: Any = stream() if chunked else payload
        r = await client.post(
            f"/v1/admin/{endpoint}", content=content, headers={"content-type": "application/json"}
        )
        version = (await client.get("/v1/config/version")).json()["version"]
    assert r.status_code == 413
    assert r.headers["content-type"] == PROBLEM
    assert version == 0
