"""Run real service processes for the runtime tests and clean up after them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

SAMPLE_SERVICE = Path(__file__).with_name("sample_service.py")
T = TypeVar("T")


@dataclass
class ServiceRun:
    """One service process: its port, its stderr (JSON logs and error lines)."""

    proc: subprocess.Popen[bytes]
    port: int
    stderr_path: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, timeout: float = 5.0) -> httpx.Response:
        return httpx.get(self.url(path), timeout=timeout)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def wait_status(self, path: str, status: int, timeout: float = 30.0) -> httpx.Response:
        """Poll ``path`` until it answers ``status``; the last response otherwise fails."""

        def answer() -> httpx.Response | None:
            try:
                return self.get(path, timeout=3)
            except httpx.HTTPError:
                return None

        last = wait_for(answer, lambda r: r is not None and r.status_code == status, timeout)
        if last is None or last.status_code != status:
            got = "no answer" if last is None else f"{last.status_code} {last.text}"
            assert self.proc.poll() is None, f"service exited: {self.stderr()[-2000:]}"
            pytest.fail(f"{path} did not answer {status} within {timeout}s: {got}")
        return last


def wait_for(fn: Callable[[], T], done: Callable[[T], bool], timeout: float) -> T:
    """Call ``fn`` until ``done(result)`` or ``timeout``; return the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., ServiceRun]]:
    """``start_service(target, port, **env)`` runs a service process.

    ``target`` is ``"sample"`` (``sample_service.py``, built from runtime pieces only)
    or a module such as ``"hyperinfer.telemetry"``. The environment is this one without
    any ``HYPERINFER_*`` variable, plus ``env``. What is still running at the end is
    stopped.
    """
    runs: list[ServiceRun] = []

    def start(target: str, port: int, **settings: Any) -> ServiceRun:
        argv = [sys.executable]
        argv += [str(SAMPLE_SERVICE)] if target == "sample" else ["-m", target]
        env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERINFER_")}
        env.update({k: str(v) for k, v in settings.items()})
        stderr_path = tmp_path / f"service-{len(runs)}.stderr"
        with stderr_path.open("wb") as err:
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
        run = ServiceRun(proc, port, stderr_path)
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.proc.poll() is None:
            run.proc.terminate()
            try:
                run.proc.wait(15)
            except subprocess.TimeoutExpired:
                run.proc.kill()
                run.proc.wait()
