"""The public surface of hyperinfer.client is deliberate: this test pins it."""

from __future__ import annotations

import hyperinfer.client as client

EXPECTED = {
    "AuthenticationFailed",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "ChatStream",
    "CompletionStream",
    "DataPlane",
    "DataPlaneOptions",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "HyperInferClient",
    "HyperInferError",
    "InvalidRequest",
    "ModelNotFound",
    "NoHealthyBackend",
    "NotReady",
    "Outcome",
    "PayloadTooLarge",
    "PermissionDenied",
    "QuotaUnavailable",
    "RateLimited",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamStatusError",
    "UpstreamTimeout",
    "Usage",
}


def test_all_is_exactly_the_public_surface() -> None:
    assert set(client.__all__) == EXPECTED


def test_every_exported_name_exists() -> None:
    for name in client.__all__:
        assert getattr(client, name) is not None
