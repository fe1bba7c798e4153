"""A small HTTP/1.1 server on asyncio streams, for the fake upstream.

Raw asyncio rather than a framework, on purpose: a fake upstream must be able to
misbehave the way real servers do (hang, drop the connection mid-body, cut a chunked
stream, send garbage), and the client library may not depend on uvicorn. It speaks
keep-alive HTTP/1.1 with ``Content-Length`` or chunked bodies both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass
class HttpRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-case names."""
    body: bytes


class HttpResponder:
    """Writes one response: whole (``send``), chunked (``start_stream``...), or not at all."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.started = False
        self.finished = False
        self.aborted = False
        self.keep_alive = True

    async def send(
        self, status: int, body: bytes, content_type: str = "application/json", **headers: str
    ) -> None:
        head = self._head(status, {"content-type": content_type, **_dashed(headers)})
        head += f"content-length: {len(body)}\r\n\r\n".encode()
        self._writer.write(head + body)
        self.started = self.finished = True
        await self._writer.drain()

    async def start_stream(
        self, status: int = 200, content_type: str = "text/event-stream", **headers: str
    ) -> None:
        head = self._head(
            status,
            {"content-type": content_type, "cache-control": "no-cache", **_dashed(headers)},
        )
        self._writer.write(head + b"transfer-encoding: chunked\r\n\r\n")
        self.started = True
        await self._writer.drain()

    async def send_chunk(self, data: bytes) -> None:
        if data:
            self._writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await self._writer.drain()

    async def end_stream(self) -> None:
        self._writer.write(b"0\r\n\r\n")
        self.finished = True
        await self._writer.drain()

    async def send_truncated(self, status: int, body: bytes) -> None:
        """Announce all of ``body``, send half of it, then drop the connection."""
        head = self._head(status, {"content-type": "application/json"})
        self._writer.write(head + f"content-length: {len(body)}\r\n\r\n".encode())
        self._writer.write(body[: len(body) // 2])
        self.started = True
        await self._writer.drain()
        self.abort()

    def abort(self) -> None:
        """Drop the connection at once, as a crashing server would (no more bytes)."""
        self.aborted = True
        self.keep_alive = False
        transport = self._writer.transport
        with contextlib.suppress(Exception):
            transport.abort()

    async def wait_disconnected(self, timeout_s: float) -> None:
        """Block until the client closes the connection (or ``timeout_s``): a hung server."""
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(timeout_s):
                while await self._reader.read(65536):
                    pass
        self.keep_alive = False

    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        lines = [f"HTTP/1.1 {status} {phrase}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if not self.keep_alive:
            lines.append("connection: close")
        return ("\r\n".join(lines) + "\r\n").encode("latin-1")


def _dashed(headers: dict[str, str]) -> dict[str, str]:
    return {name.replace("_", "-"): value for name, value in headers.items()}


Handler = Callable[[HttpRequest, HttpResponder], Awaitable[None]]


class BadRequest(Exception):
    pass


@dataclass
class HttpServer:
    """Serve ``handler`` on ``host:port`` (port 0: any free port, see ``.port``)."""

    handler: Handler
    host: str = "127.0.0.1"
    port: int = 0
    _server: asyncio.Server | None = None
    _connections: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._connection, self.host, self.port, limit=MAX_HEADER_BYTES, backlog=2048
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve_connection(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass  # stop() cancels us; asyncio would log a cancelled connection task as an error
        finally:
            self._connections.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                request = await read_request(reader)
            except BadRequest as exc:
                writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: %d\r\n" % len(str(exc)))
                writer.write(b"connection: close\r\n\r\n" + str(exc).encode())
                await writer.drain()
                return
            if request is None:
                return
            responder = HttpResponder(reader, writer)
            responder.keep_alive = request.headers.get("connection", "").lower() != "close"
            try:
                await self.handler(request, responder)
            except (ConnectionError, asyncio.CancelledError):
                raise
            except Exception:
                log.exception("fake upstream handler failed")
                if not responder.started:
                    await responder.send(500, b'{"error": {"message": "fake upstream crashed"}}')
                else:
                    responder.abort()
            if not responder.finished or not responder.keep_alive:
                return


async def read_request(reader: asyncio.StreamReader) -> HttpRequest | None:
    """The next request on a connection; None when the client closed it cleanly."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadRequest("truncated request head") from None
        return None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError:
        raise BadRequest("malformed request line") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    path, _, query = target.partition("?")
    body = await read_body(reader, headers)
    return HttpRequest(method.upper(), unquote(path), dict(parse_qsl(query)), headers, body)


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = int(headers.get("content-length", "0") or 0)
    if length > MAX_BODY_BYTES:
        raise BadRequest("body too large")
    return await reader.readexactly(length) if length else b""
