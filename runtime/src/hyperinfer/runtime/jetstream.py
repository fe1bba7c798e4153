"""JetStream stream definitions from ``infra/nats/streams.json``, applied idempotently.

Only fields NATS 2.9 understands are used; anything newer must be gated on
``NatsConnection.server_version`` by the caller.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError


def default_streams_file() -> Path:
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "infra" / "nats" / "streams.json"
        if candidate.is_file():
            return candidate
    return Path("/app/infra/nats/streams.json")


def load_stream_configs(owner: str, path: Path | None = None) -> list[StreamConfig]:
    """The streams that ``owner`` (a service name) is responsible for creating."""
    spec: dict[str, Any] = json.loads((path or default_streams_file()).read_text())
    return [
        StreamConfig.from_response(dict(s["config"]))
        for s in spec["streams"]
        if s["owner"] == owner
    ]


async def ensure_streams(js: JetStreamContext, configs: list[StreamConfig]) -> list[str]:
    """Create missing streams and update existing ones; returns the names touched."""
    touched = []
    for config in configs:
        assert config.name is not None
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)
        touched.append(config.name)
    return touched
