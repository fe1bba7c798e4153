"""No input crashes the ingress: schemathesis drives every documented route with
generated requests (bounded) against a real ingress with the echo backend behind it."""

from __future__ import annotations

import httpx
import orjson
import pytest
import schemathesis
from hyperinfer.client.testing.scenario import Scenario
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import IngressFactory

MAX_EXAMPLES = 40


@pytest.fixture
def ingress_and_key(start_ingress: IngressFactory) -> tuple[str, str]:
    world = Scenario.build(
        backends={"echo": ("echo", "")},
        aliases={"small": [("echo", "echo-1")]},
    )
    return start_ingress(world).url, world.api_key


def test_generated_requests_never_get_a_500(ingress_and_key: tuple[str, str]) -> None:
    url, key = ingress_and_key
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    hot = {"/v1/chat/completions", "/v1/embeddings", "/v1/models", "/v1/messages"}
    operations = [result.ok() for result in schema.get_all_operations() if result.ok().path in hot]
    assert {op.path for op in operations} == hot
    for operation in operations:
        check_operation(operation, url, key)


def check_operation(operation: schemathesis.APIOperation, url: str, key: str) -> None:
    statuses: list[int] = []

    @given(case=operation.as_strategy(), authorized=st.booleans(), known=st.booleans())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,  # the same examples every run: the 200/4xx mix is not left to luck
    )
    def run(case: schemathesis.Case, authorized: bool, known: bool) -> None:
        if known and isinstance(case.body, dict):
            case.body["model"] = "small"  # half the requests name a real alias
        headers = {"authorization": f"Bearer {key}"} if authorized else {}
        response = case.call(base_url=url, headers=headers, timeout=10)
        statuses.append(response.status_code)
        assert response.status_code < 500, (case.body, response.text[:300])
        assert response.headers.get("x-request-id")
        if response.status_code >= 400:
            body = orjson.loads(response.content)
            assert "error" in body
        if not authorized:
            assert response.status_code in (401, 413) or operation.path == "/v1/models"

    run()
    assert len(statuses) >= MAX_EXAMPLES // 2, f"{operation.path}: only {len(statuses)} requests"
    if operation.path != "/v1/models":  # valid and invalid bodies were both generated
        assert any(s == 200 for s in statuses), (operation.path, sorted(set(statuses)))
        assert any(400 <= s < 500 for s in statuses), (operation.path, sorted(set(statuses)))


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", b"{not json"),
        ("/v1/chat/completions", b"[1, 2]"),
        ("/v1/chat/completions", b'{"model": "small", "messages": "hi"}'),
        ("/v1/chat/completions", b'{"model": "small", "messages": [1]}'),
        ("/v1/chat/completions", b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}'),
        ("/v1/chat/completions", b'{"model": "small", "max_tokens": "lots", "messages": [{}]}'),
        ("/v1/embeddings", b'{"model": "small"}'),
        ("/v1/messages", b'{"model": "small", "messages": [{"role": "user", "content": "x"}]}'),
        ("/v1/messages", b'{"model": "small", "max_tokens": 5, "messages": [{"role": "x"}]}'),
        ("/v1/messages", b'{"model": "small", "max_tokens": 5, "messages": [{"role": "user"}]}'),
    ],
)
def test_malformed_bodies_are_clean_4xx(
    path: str, body: bytes, ingress_and_key: tuple[str, str]
) -> None:
    url, key = ingress_and_key
    response = httpx.post(url + path, content=body, headers={"authorization": f"Bearer {key}"})
    assert 400 <= response.status_code < 500, response.text
    parsed = response.json()
    if path == "/v1/messages":
        assert parsed["type"] == "error"
        assert parsed["error"]["type"] in ("invalid_request_error", "not_found_error")
    else:
        assert parsed["error"]["type"] in ("invalid_request_error", "not_found_error")
