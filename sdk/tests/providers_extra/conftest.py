"""A real Triton server (pytriton on CPU) for the Triton adapter's tests, once per session.

Skips only where nvidia-pytriton/tritonclient are not installed (the uv group
``backends`` installs them); under CI (``CI`` or ``HYPERINFER_REQUIRE_BACKENDS``) it fails
instead, so a missing install never passes as a skip.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest
from hyperinfer.runtime.testing.servers import free_port


@pytest.fixture(scope="session")
def triton_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not all(importlib.util.find_spec(m) for m in ("pytriton", "tritonclient")):
        reason = "nvidia-pytriton / tritonclient are not installed (uv group 'backends')"
        if os.environ.get("CI") or os.environ.get("HYPERINFER_REQUIRE_BACKENDS"):
            pytest.fail(reason)
        pytest.skip(reason)
    from hyperinfer.client.testing.triton_server import TritonServerProcess

    server = TritonServerProcess(
        tmp_path_factory.mktemp("triton"), free_port(), free_port(), free_port()
    )
    server.start()
    yield server.url
    server.stop()
