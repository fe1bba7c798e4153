"""Processes for the data-plane benchmark: start pinned to a core, wait, sample RSS, stop.

Helper of ``bench/dataplane.py`` (running it alone does nothing).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pin(pid: int, cores: str) -> None:
    """Move a running process (0: this one) to ``cores`` (e.g. ``"1"``), when they exist."""
    if cores:
        os.sched_setaffinity(pid, {int(c) for c in cores.split(",")})


def pinned(cores: str, argv: list[str]) -> list[str]:
    """``argv`` under ``taskset -c cores`` (when taskset exists and the cores do)."""
    if shutil.which("taskset") is None or not cores:
        return argv
    return ["taskset", "-c", cores, *argv]


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = ROOT
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=out, env={**os.environ, **self.env}, cwd=self.cwd
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_http(self, url: str, timeout_s: float = 90.0, method: str = "GET") -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            data = b"{}" if method == "POST" else None
            request = urllib.request.Request(url, data=data, method=method)
            try:
                with urllib.request.urlopen(request, timeout=1) as resp:
                    if resp.status < 500:
                        return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:  # it answers (a 4xx to an empty body is an answer)
                    return
            except OSError:
                pass
            time.sleep(0.2)
        tail = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{self.name} did not answer {url}:\n{tail}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` and its children (uvicorn workers), MiB."""
    total = 0
    for p in [pid, *_children(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        tasks = Path(f"/proc/{pid}/task")
        kids: list[int] = []
        for task in tasks.iterdir():
            text = (task / "children").read_text().split()
            kids += [int(k) for k in text]
        return kids + [g for k in kids for g in _children(k)]
    return []


class RssSampler:
    """Peak RSS of a process tree while a block runs (sampled every 50 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            self._stop.wait(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib(self.pid))


class CpuMeter:
    """CPU seconds (user + system) a process spends while a block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seconds = 0.0
        self._start = 0.0

    def _cpu(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> CpuMeter:
        self._start = self._cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = self._cpu() - self._start


@contextlib.contextmanager
def paused(procs: list[Proc]) -> Iterator[None]:
    """SIGSTOP these processes (and their children) for the block, then SIGCONT.

    The proxies not under test share the proxy core; an idle one still runs timers (LiteLLM
    has background loops), which would land in the measured proxy's latency.
    """
    pids = [p for proc in procs for p in (proc.pid, *_children(proc.pid))]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
