"""A lean HTTP/1.1 client for upstream calls: keep-alive pool, httptools parsing.

The data plane makes one POST per request attempt and needs little of a general HTTP
client: no cookies, redirects, proxies, multipart or tracing hooks. aiohttp spends
~170 µs of CPU per call here (request/response objects, header multidicts, timeout
contexts, cookie jar); this client, an ``asyncio.Protocol`` per connection with
llhttp's parser (``httptools``, C), spends ~30-40 µs. Measured side by side in
``bench/dataplane_upstream.py``.

What it does:

- **keep-alive pool** per (scheme, host, port): the most recently used idle connection
  first; idle ones older than ``keepalive_expiry_s`` are closed; ``max_connections``
  open at most (a caller waits for a free one within its timeout);
- **TLS** for ``https`` (the system's default trust store), HTTP/1.1 only;
- **bodies**: ``Content-Length``, chunked or until close; ``gzip``/``deflate`` decoded
  (it asks for them, as aiohttp did);
- **timeouts**: ``post`` has a hard deadline for the whole answer; a stream allows at
  most ``timeout_s`` of silence before each piece (the first byte included); connect
  is bounded by the pool's ``connect_timeout_s``;
- **a stale keep-alive connection** (closed by the server while idle, noticed when the
  request is sent) is retried once on a new connection, since the server cannot have
  seen the request;
- **errors** are ``UpstreamError`` subclasses: ``UpstreamConnectError`` (could not
  connect), ``UpstreamTimeout``, ``UpstreamProtocolError`` (broken connection or
  malformed HTTP).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools
from hyperinfer.client.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)

__all__ = ["Http1Pool", "Http1Response", "Target"]

USER_AGENT = b"hyperinfer"
_HIGH_WATER = 256 * 1024  # buffered stream bytes before reading pauses
_MAX_TARGETS = 1024


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL points: the pool key and the request line's path."""

    scheme: str
    host: str
    port: int
    path: bytes
    host_header: bytes

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamConnectError(f"unsupported upstream URL {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default = port == (443 if parts.scheme == "https" else 80)
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        host_header = host if default else f"{host}:{port}"
        return cls(parts.scheme, parts.hostname, port, path.encode(), host_header.encode())


class _Connection(asyncio.Protocol):
    """One socket; one response at a time, parsed as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0
        self.label = "the upstream"
        self.parser = httptools.HttpResponseParser(self)  # llhttp restarts after each message
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.keep_alive = False
        self.complete = False
        self.received = 0
        self.error: UpstreamError | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None
        self._until_close = False

    # --- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"{self.label} sent malformed HTTP: {exc}"))
            self.close()
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamProtocolError(f"{self.label} switched protocols"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.headers_done and self._until_close and not self.complete:
            self.on_message_complete()  # a body delimited by the end of the connection
        elif not self.complete:
            reason = f": {exc}" if exc else ""
            self._fail(UpstreamProtocolError(f"{self.label} broke the connection{reason}"))

    # --- llhttp callbacks -------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self.headers.get(key)
        self.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets once complete
        self.headers_done = True
        headers = self.headers
        if "content-length" not in headers and "chunked" not in headers.get(
            "transfer-encoding", ""
        ):
            self._until_close = self.status >= 200 and self.status not in (204, 304)
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # --- the caller's side ------------------------------------------------------------
    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    async def wait(self, deadline: float | None) -> None:
        """Until something happens (headers, body, end, error) or ``deadline`` passes."""
        self.waiter = self.loop.create_future()
        timer = None if deadline is None else self.loop.call_at(deadline, self._wake)
        try:
            await self.waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    def take(self) -> bytes:
        data = b"".join(self.chunks) if len(self.chunks) != 1 else self.chunks[0]
        self.chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None and not self.lost:
            self.paused = False
            self.transport.resume_reading()
        return data

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and not self.lost
            and self.error is None
            and self.keep_alive
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()


class Http1Response:
    """An answer being received: ``status``, ``headers`` (lowercase names), the body."""

    def __init__(
        self,
        pool: Http1Pool,
        conn: _Connection,
        target: Target,
        read_timeout_s: float,
        label: str,
    ) -> None:
        self._label = label
        self._pool = pool
        self._conn = conn
        self._target = target
        self._read_timeout_s = read_timeout_s
        self._decoder = _decoder(conn.headers.get("content-encoding", ""))
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers
        self._done = False

    async def chunks(self, deadline: float | None = None) -> AsyncIterator[bytes]:
        """The body as it arrives (decoded): at most ``timeout_s`` between two pieces, and
        all of it before ``deadline`` (loop time) when one is given."""
        conn = self._conn
        while True:
            if conn.chunks:
                data = self._decode(conn.take())
                if data:
                    yield data
                continue
            if conn.error is not None:
                raise conn.error
            if conn.complete:
                tail = self._decoder.flush() if self._decoder is not None else b""
                if tail:
                    yield tail
                self._finish()
                return
            silence = conn.loop.time() + self._read_timeout_s
            until = silence if deadline is None else min(deadline, silence)
            await conn.wait(until)
            idle = not conn.chunks and not conn.complete and conn.error is None
            if idle and conn.loop.time() >= until:
                raise UpstreamTimeout(
                    f"{self._label} did not answer within {self._read_timeout_s:g}s"
                )

    async def read(self, deadline: float | None = None) -> bytes:
        conn = self._conn
        if conn.complete and conn.error is None and self._decoder is None:
            data = conn.take() if conn.chunks else b""  # all there already: the usual case
            self._finish()
            return data
        return b"".join([chunk async for chunk in self.chunks(deadline)])

    def _decode(self, data: bytes) -> bytes:
        if self._decoder is None:
            return data
        try:
            return self._decoder.decompress(data)
        except zlib.error as exc:
            raise UpstreamProtocolError(f"{self._label} sent an undecodable body: {exc}") from None

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._pool.release(self._target, self._conn)

    def abandon(self) -> None:
        """Stop reading: the connection is closed (or kept, if the answer was complete)."""
        if not self._done:
            self._done = True
            if not self._conn.reusable:
                self._conn.close()
            self._pool.release(self._target, self._conn)


def _decoder(encoding: str) -> zlib._Decompress | None:
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(32 + zlib.MAX_WBITS)  # zlib-wrapped (or gzip) deflate
    return None


class Http1Pool:
    """Keep-alive HTTP/1.1 connections to any number of hosts, bounded in total."""

    def __init__(
        self,
        *,
        max_connections: int = 1024,
        max_idle_per_host: int = 512,
        keepalive_expiry_s: float = 60.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.max_idle_per_host = max_idle_per_host
        self.keepalive_expiry_s = keepalive_expiry_s
        self.connect_timeout_s = connect_timeout_s
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._targets: dict[str, Target] = {}
        self._ssl: ssl.SSLContext | None = None
        self._closed = False
        self.opened = 0

    # --- requests -------------------------------------------------------------------------
    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout_s: float,
        label: str | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """POST and read the whole answer within ``timeout_s``: ``(status, headers, body)``.

        ``label`` names the upstream in error messages (default: its host and port)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        target = self.target(url)
        label = label or self.name(target)
        response = await self._send(target, body, headers, deadline, timeout_s, label)
        try:
            return response.status, response.headers, await response.read(deadline)
        finally:
            response.abandon()

    @contextlib.asynccontextmanager
    async def stream(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout_s: float,
        label: str | None = None,
    ) -> AsyncIterator[Http1Response]:
        """POST and hand over the answer once its head arrived; freed on exit."""
        loop = asyncio.get_running_loop()
        target = self.target(url)
        label = label or self.name(target)
        deadline = loop.time() + timeout_s
        response = await self._send(target, body, headers, deadline, timeout_s, label)
        try:
            yield response
        finally:
            response.abandon()

    def target(self, url: str) -> Target:
        found = self._targets.get(url)
        if found is None:
            found = Target.parse(url)
            if len(self._targets) < _MAX_TARGETS:
                self._targets[url] = found
        return found

    @staticmethod
    def name(target: Target) -> str:
        return f"upstream {target.host}:{target.port}"

    async def _send(
        self,
        target: Target,
        body: bytes,
        headers: Mapping[str, str],
        head_deadline: float,
        read_timeout_s: float,
        label: str,
    ) -> Http1Response:
        request = _request(body, headers, target)
        for attempt in (1, 2):
            conn, reused = await self._acquire(target, head_deadline, label)
            conn.label = label
            try:
                await self._exchange(conn, request, head_deadline, read_timeout_s, label)
            except BaseException:  # timed out, or the caller went away: the socket goes too
                conn.close()
                self.release(target, conn)
                raise
            if conn.error is None:
                return Http1Response(self, conn, target, read_timeout_s, label)
            error = conn.error
            stale = reused and conn.received == 0  # closed by the server while idle
            conn.close()
            self.release(target, conn)
            if not (stale and attempt == 1):
                raise error
        raise AssertionError("unreachable")

    @staticmethod
    async def _exchange(
        conn: _Connection, request: bytes, head_deadline: float, read_timeout_s: float, label: str
    ) -> None:
        """Write the request and wait for the answer's head (or an error)."""
        assert conn.transport is not None
        conn.transport.write(request)
        while not conn.headers_done and conn.error is None:
            await conn.wait(head_deadline)
            waiting = not conn.headers_done and conn.error is None
            if waiting and conn.loop.time() >= head_deadline:
                raise UpstreamTimeout(f"{label} did not answer within {read_timeout_s:g}s")

    # --- the pool ---------------------------------------------------------------------------
    async def _acquire(
        self, target: Target, deadline: float, label: str
    ) -> tuple[_Connection, bool]:
        loop = asyncio.get_running_loop()
        if self._closed:
            raise UpstreamConnectError("the upstream connection pool is closed")
        idle = self._idle.get(target.key)
        expired_before = loop.time() - self.keepalive_expiry_s
        while idle:
            conn = idle.pop()
            if not conn.lost and conn.idle_since > expired_before:
                conn._reset()
                return conn, True
            conn.close()
            self._slots.release()
        await self._slot(deadline, label)
        try:
            return await self._connect(target, loop, label), False
        except BaseException:
            self._slots.release()
            raise

    async def _slot(self, deadline: float, label: str) -> None:
        """A free connection slot; when all are taken, an idle connection elsewhere is
        closed to make room, else the caller waits (until ``deadline``)."""
        if self._slots.locked():
            for conns in self._idle.values():
                if conns:
                    conns.pop(0).close()
                    self._slots.release()
                    break
        if not self._slots.locked():
            await self._slots.acquire()  # free: returns without suspending
            return
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        except TimeoutError:
            raise UpstreamTimeout(f"no free connection to {label}") from None

    async def _connect(
        self, target: Target, loop: asyncio.AbstractEventLoop, label: str
    ) -> _Connection:
        conn = _Connection(loop)
        tls = self._tls() if target.scheme == "https" else None
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await loop.create_connection(
                    lambda: conn,
                    target.host,
                    target.port,
                    ssl=tls,
                    server_hostname=target.host if tls is not None else None,
                )
        except TimeoutError:
            raise UpstreamConnectError(f"{label}: connect timed out") from None
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise UpstreamConnectError(f"{label} unreachable: {reason}") from None
        except BaseException:
            conn.close()
            raise
        self.opened += 1
        return conn

    def release(self, target: Target, conn: _Connection) -> None:
        """Give a finished connection back: kept idle if reusable, else closed."""
        if conn.reusable and not self._closed:
            idle = self._idle.setdefault(target.key, [])
            if len(idle) < self.max_idle_per_host:
                conn.idle_since = conn.loop.time()
                idle.append(conn)
                return
        conn.close()
        self._slots.release()

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    @property
    def idle_connections(self) -> int:
        return sum(len(conns) for conns in self._idle.values())

    async def aclose(self) -> None:
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


def _request(body: bytes, headers: Mapping[str, str], target: Target) -> bytes:
    """The request head and body, ready to write."""
    lines = [
        b"POST " + target.path + b" HTTP/1.1",
        b"host: " + target.host_header,
        b"content-length: " + str(len(body)).encode(),
        b"accept-encoding: gzip, deflate",
        b"user-agent: " + USER_AGENT,
    ]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise UpstreamError(f"header {name!r} has a line break; not sent")
        lines.append(f"{name}: {value}".encode("latin-1"))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
