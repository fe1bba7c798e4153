"""JetStream definitions apply idempotently on the NATS under test (Debian 2.9 by default,
the PyPI nats-server in scripts/test's second pass)."""

from __future__ import annotations

import json

import pytest
from hyperinfer.runtime.connections import NatsConnection
from hyperinfer.runtime.jetstream import default_streams_file, ensure_streams, load_stream_configs

pytestmark = pytest.mark.bus

OWNERS = sorted({s["owner"] for s in json.loads(default_streams_file().read_text())["streams"]})


@pytest.mark.parametrize("owner", OWNERS)
async def test_streams_are_created_then_reapplied_unchanged(nats_url: str, owner: str) -> None:
    conn = NatsConnection(nats_url, "test-jetstream")
    await conn.connect(5)
    try:
        configs = load_stream_configs(owner)
        assert configs
        names = [c.name for c in configs]
        assert await ensure_streams(conn.jetstream, configs) == names
        assert await ensure_streams(conn.jetstream, configs) == names
        for config in configs:
            assert config.name is not None
            info = await conn.jetstream.stream_info(config.name)
            assert info.config.subjects == config.subjects
            assert info.config.retention == config.retention
            assert info.config.max_msgs == config.max_msgs
        assert conn.server_version >= (2, 9, 0)
    finally:
        await conn.close()


def test_an_unknown_owner_has_no_streams() -> None:
    assert load_stream_configs("nobody") == []
