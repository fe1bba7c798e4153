"""hyperinfer.client: the data-plane library and thick client.

The public surface (pinned by ``sdk/tests/test_exported_members.py``)::

    HyperInferClient          the thick client (chat, chat_stream, embeddings, models)
    DataPlane                 the engine shared by the ingress and the thick client
    models                    OpenAI-shaped request/response models (ChatCompletion, ...)
    errors                    the exception tree (HyperInferError and below)

Subsystems stay importable by module: ``providers`` (adapters and their protocol),
``governance``, ``resilience``, ``usage``, ``tokens``, ``quota``, ``config_agent``,
``routing_table``, ``credentials``, ``keys``, ``cache``, ``testing`` (fakes).
"""

from hyperinfer.client.dataplane import ChatStream, DataPlane, DataPlaneOptions, Outcome
from hyperinfer.client.errors import (
    AuthenticationFailed,
    HyperInferError,
    InvalidRequest,
    ModelNotFound,
    NoHealthyBackend,
    NotReady,
    PayloadTooLarge,
    PermissionDenied,
    QuotaUnavailable,
    RateLimited,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from hyperinfer.client.models import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    EmbeddingRequest,
    EmbeddingResponse,
    Usage,
)
from hyperinfer.client.thick_client import CompletionStream, HyperInferClient

__all__ = [
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
]
