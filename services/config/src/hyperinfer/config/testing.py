"""The config service as a real process on a free port, for tests and benchmarks::

    with ConfigServiceProcess(postgres_dsn=dsn, redis_url=r, nats_url=n, workdir=tmp) as cfg:
        httpx.post(f"{cfg.url}/v1/admin/teams", json={...}, headers=cfg.admin_headers)

Its JSON log lines go to ``cfg.log_path``. Nothing here is a fake: it runs
``python -m hyperinfer.config`` with the given infrastructure and keys.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx
from hyperinfer.runtime.testing.servers import free_port

TEST_ADMIN_KEY = "test-admin-key-0123456789"
TEST_CREDENTIALS_KEY = "test-credentials-key-0123456789"
TEST_KEY_HASH_SALT = "test-salt-0123456789"


class ConfigServiceProcess:
    """``python -m hyperinfer.config`` on 127.0.0.1:<free port>."""

    def __init__(
        self,
        *,
        postgres_dsn: str,
        redis_url: str,
        nats_url: str,
        workdir: Path,
        admin_key: str = TEST_ADMIN_KEY,
        credentials_key: str = TEST_CREDENTIALS_KEY,
        key_hash_salt: str = TEST_KEY_HASH_SALT,
        port: int | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.admin_key = admin_key
        self.credentials_key = credentials_key
        self.log_path = workdir / f"config-{self.port}.log"
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("HYPERINFER_")}
        self._env = {
            **inherited,
            "HYPERINFER_ENVIRONMENT": "test",
            "HYPERINFER_POSTGRES_DSN": postgres_dsn,
            "HYPERINFER_REDIS_URL": redis_url,
            "HYPERINFER_NATS_URL": nats_url,
            "HYPERINFER_ADMIN_KEY": admin_key,
            "HYPERINFER_CREDENTIALS_KEY": credentials_key,
            "HYPERINFER_CONFIG_KEY_HASH_SALT": key_hash_salt,
            "HYPERINFER_CONFIG_HTTP_PORT": str(self.port),
            "HYPERINFER_CONFIG_HTTP_HOST": "127.0.0.1",
            **(extra_env or {}),
        }
        self._proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.admin_key}"}

    def start(self, timeout_s: float = 30.0) -> None:
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "hyperinfer.config"],
                env=self._env,
                stdout=log,
                stderr=log,
            )
        try:
            self._wait_ready(timeout_s)
        except Exception:
            self.stop()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"config service exited:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"config service not ready after {timeout_s}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def __enter__(self) -> ConfigServiceProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
