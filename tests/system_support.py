"""Support for the whole-system tests (``tests/test_system_*.py``): real service processes.

::

    with ServiceProcess("ingress", system_env(infra), tmp_path) as ingress:
        httpx.get(f"{ingress.url}/health/ready")

Each service runs as ``python -m hyperinfer.<service>`` on a free port with the test's
NATS, Redis and PostgreSQL, the keys of ``hyperinfer.config.testing`` (so a
``ConfigServiceProcess`` and the services agree on the admin key, the credentials key
and the key-hash salt), its JSON log in ``workdir/<service>-<port>.log``. ``stop``
sends SIGTERM and waits (SIGKILL after a grace), so nothing outlives the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

import httpx
from hyperinfer.config.testing import (
    TEST_ADMIN_KEY,
    TEST_CREDENTIALS_KEY,
    TEST_KEY_HASH_SALT,
    ConfigServiceProcess,
)
from hyperinfer.runtime.testing.servers import free_port

INTERNAL_KEY = "test-internal-key-0123456789"


def system_env(nats_url: str, redis_url: str, postgres_dsn: str) -> dict[str, str]:
    """The shared settings every service of one test system reads."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("HYPERINFER_")}
    return {
        **inherited,
        "HYPERINFER_ENVIRONMENT": "test",
        "HYPERINFER_NATS_URL": nats_url,
        "HYPERINFER_REDIS_URL": redis_url,
        "HYPERINFER_POSTGRES_DSN": postgres_dsn,
        "HYPERINFER_ADMIN_KEY": TEST_ADMIN_KEY,
        "HYPERINFER_INTERNAL_KEY": INTERNAL_KEY,
        "HYPERINFER_CREDENTIALS_KEY": TEST_CREDENTIALS_KEY,
        "HYPERINFER_CONFIG_KEY_HASH_SALT": TEST_KEY_HASH_SALT,
    }


def config_process(
    nats_url: str, redis_url: str, postgres_dsn: str, workdir: Path
) -> ConfigServiceProcess:
    return ConfigServiceProcess(
        postgres_dsn=postgres_dsn, redis_url=redis_url, nats_url=nats_url, workdir=workdir
    )


class ServiceProcess:
    """``python -m hyperinfer.<service>`` on 127.0.0.1:<free port>."""

    def __init__(
        self,
        service: str,
        env: Mapping[str, str],
        workdir: Path,
        *,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.service = service
        self.port = free_port()
        prefix = "HYPERINFER_" + service.upper().replace("-", "_") + "_"
        own = {f"{prefix}{name}": value for name, value in (settings or {}).items()}
        self._env = {**env, f"{prefix}HTTP_PORT": str(self.port), **own}
        self.log_path = workdir / f"{service}-{self.port}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._signalled = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        self._signalled = False
        module = "hyperinfer." + self.service.replace("-", "_")
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", module], env=self._env, stdout=log, stderr=log
            )
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise AssertionError(f"{self.service} exited:\n{self.log_tail()}")
            try:
                answer = httpx.get(f"{self.url}/health/ready", timeout=2)
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            else:
                if answer.status_code == 200:
                    return
                last = f"{answer.status_code} {answer.text[:300]}"
            time.sleep(0.1)
        raise AssertionError(
            f"{self.service} not ready in {timeout_s}s ({last}):\n{self.log_tail()}"
        )

    def terminate(self) -> None:
        """SIGTERM once, without waiting (``stop`` waits; a second SIGTERM would cut the drain)."""
        if self._proc is not None and self._proc.poll() is None and not self._signalled:
            self._proc.send_signal(signal.SIGTERM)
            self._signalled = True

    def stop(self, grace_s: float = 20.0) -> int | None:
        """SIGTERM, wait for the drain, SIGKILL after ``grace_s``; the exit status."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        signalled, self._signalled = self._signalled, False
        if proc.poll() is None:
            if not signalled:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def log_tail(self, chars: int = 3000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def __enter__(self) -> ServiceProcess:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_all(processes: list[ServiceProcess]) -> None:
    """Start every process at once (start-up overlaps), then wait until each is ready."""
    for proc in processes:
        proc.start()
    try:
        for proc in processes:
            proc.wait_ready()
    except BaseException:
        stop_all(processes)
        raise


def stop_all(processes: list[ServiceProcess]) -> list[int | None]:
    """SIGTERM every process at once (they drain together), then wait for each: exit codes."""
    for proc in processes:
        proc.terminate()
    return [p.stop() for p in processes]


def admin_headers() -> dict[str, str]:
    return {"authorization": f"Bearer {TEST_ADMIN_KEY}"}


def eventually(predicate: Callable[[], object], timeout_s: float, what: str) -> object:
    """Poll (blocking) until ``predicate()`` is truthy; returns its value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s}s")
        time.sleep(0.05)
