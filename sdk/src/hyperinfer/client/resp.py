"""A minimal Redis client for the hot path: one pipelined connection, hiredis parsing.

Why not redis-py here: an awaited redis-py command costs ~150-210 µs of client CPU on
this machine (connection pool checkout, command packing in Python, ``asyncio.wait_for``
timers, a stream reader per connection), more than the rest of a request's governance.
The data plane sends only a few commands (the reserve script on every request, settles
and ``XADD``s in batches), so it speaks RESP itself:

- **one connection, many callers**: commands are written back to back and Redis answers
  them in order, so concurrent callers pipeline naturally — each waits for its own place
  in a FIFO of pending replies. Writes made in one event-loop turn leave in one
  ``send`` (a syscall costs tens of µs here);
- **hiredis** (``hiredis.Reader``, C) parses replies and ``hiredis.pack_command`` packs
  commands; an error reply becomes the same exception redis-py raises
  (``NoScriptError``, ``ReadOnlyError``, ``OutOfMemoryError``, ``ResponseError``, ...);
- **timeouts**: a reply later than ``timeout_s`` fails every pending command with
  ``redis.exceptions.TimeoutError`` and drops the connection (a late reply could no
  longer be matched to its command); one timer per connection, not one per command;
- **reconnect**: a lost connection fails its pending commands with
  ``redis.exceptions.ConnectionError``; the next command connects again (at most
  ``connect_timeout_s``), so a Redis restart costs only what was in flight;
- **scripts** (``Script``): ``EVALSHA``, and ``EVAL`` (which also loads it) on ``NOSCRIPT``.

The errors are redis-py's, so code written against redis-py (the quota limiter's failure
policy) handles them unchanged. ``RespClient.execute_many`` is a pipeline: the replies
in order, an error reply as an exception *instance* in its place.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["RespClient", "Script"]

Arg = bytes | str | int | float
_ERRORS: dict[str, type[RedisError]] = {
    "NOSCRIPT": NoScriptError,
    "READONLY": ReadOnlyError,
    "OOM": OutOfMemoryError,
    "NOAUTH": AuthenticationError,
    "WRONGPASS": AuthenticationError,
}


def reply_error(message: str) -> RedisError:
    """The redis-py exception for an error reply (``NOSCRIPT ...`` → ``NoScriptError``)."""
    code, _, rest = message.partition(" ")
    if code == "LOADING":  # redis-py treats a loading server as unreachable
        return BusyLoadingError(rest)
    kind = _ERRORS.get(code)
    return kind(rest) if kind is not None else ResponseError(message)


def _pack(args: Sequence[Arg]) -> bytes:
    """RESP of one command (hiredis, in C); its stub wrongly asks for a 1-tuple."""
    packed: bytes = hiredis.pack_command(tuple(args))  # type: ignore[arg-type]
    return packed


@dataclass(frozen=True)
class Script:
    """A Lua script known by its SHA1 (``EVALSHA``), with its source for ``EVAL``."""

    source: str
    sha: bytes = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", digest.encode())

    def evalsha(self, keys: Sequence[Arg], args: Sequence[Arg]) -> tuple[Arg, ...]:
        return (b"EVALSHA", self.sha, len(keys), *keys, *args)

    def eval(self, keys: Sequence[Arg], args: Sequence[Arg]) -> tuple[Arg, ...]:
        return (b"EVAL", self.source, len(keys), *keys, *args)


class _Waiter(Protocol):
    deadline: float

    def deliver(self, reply: Any) -> bool:
        """Take the next reply; True once the waiter has every reply it waits for."""
        ...

    def fail(self, exc: BaseException) -> None: ...


class _One:
    """The future of one command's reply."""

    __slots__ = ("deadline", "future")

    def __init__(self, future: asyncio.Future[Any], deadline: float) -> None:
        self.future = future
        self.deadline = deadline

    def deliver(self, reply: Any) -> bool:
        if not self.future.done():
            if isinstance(reply, RedisError):
                self.future.set_exception(reply)
            else:
                self.future.set_result(reply)
        return True

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class _Many:
    """The future of a pipeline's replies, collected one by one (errors kept in place)."""

    __slots__ = ("deadline", "future", "left", "replies")

    def __init__(self, future: asyncio.Future[Any], deadline: float, count: int) -> None:
        self.future = future
        self.deadline = deadline
        self.replies: list[Any] = []
        self.left = count

    def deliver(self, reply: Any) -> bool:
        self.replies.append(reply)
        self.left -= 1
        if self.left:
            return False
        if not self.future.done():
            self.future.set_result(self.replies)
        return True

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class _Connection(asyncio.Protocol):
    """One socket: writes coalesced per loop turn, replies matched to waiters in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self._loop = loop
        self._timeout_s = timeout_s
        self._reader = hiredis.Reader(replyError=reply_error)
        self._pending: collections.deque[_Waiter] = collections.deque()
        self._out: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.lost: BaseException | None = None

    # --- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        pending = self._pending
        try:
            while (reply := reader.gets()) is not False:
                if pending[0].deliver(reply):
                    pending.popleft()
        except (hiredis.ProtocolError, IndexError) as exc:  # out of step: start over
            self.drop(RedisConnectionError(f"Redis protocol error: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc else ""
        self._fail_all(RedisConnectionError(f"Connection to Redis lost{reason}"))

    # --- commands -------------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        transport = self._transport
        return self.lost is None and transport is not None and not transport.is_closing()

    def send(self, packed: bytes, waiter: _Waiter) -> None:
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(packed)
        self._pending.append(waiter)
        if self._timer is None:
            self._timer = self._loop.call_at(waiter.deadline, self._check)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _check(self) -> None:
        """The oldest pending reply is the first due: late → every pending one fails."""
        self._timer = None
        if not self._pending:
            return
        due = self._pending[0].deadline
        if due <= self._loop.time():
            self.drop(RedisTimeoutError(f"Timeout reading from Redis ({self._timeout_s:g}s)"))
        else:
            self._timer = self._loop.call_at(due, self._check)

    def drop(self, exc: BaseException) -> None:
        self._fail_all(exc)
        if self._transport is not None:
            self._transport.abort()

    def _fail_all(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._out.clear()
        while self._pending:
            self._pending.popleft().fail(exc)


class RespClient:
    """A pipelined connection to one Redis (``redis://``, ``rediss://`` or ``unix://``)."""

    def __init__(
        self, url: str, *, timeout_s: float = 0.5, connect_timeout_s: float | None = None
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.connect_timeout_s = timeout_s if connect_timeout_s is None else connect_timeout_s
        self._options = parse_url(url)
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._closed = False
        self.connects = 0

    # --- commands -------------------------------------------------------------------------
    async def execute(self, *args: Arg) -> Any:
        """One command's reply (an error reply raises its redis-py exception)."""
        conn = self._conn
        if conn is None or not conn.usable:
            conn = await self._connection()
        loop = conn._loop
        future = loop.create_future()
        conn.send(_pack(args), _One(future, loop.time() + self.timeout_s))
        return await future

    async def execute_many(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Several commands in one write; their replies in order (errors as instances)."""
        if not commands:
            return []
        conn = self._conn
        if conn is None or not conn.usable:
            conn = await self._connection()
        loop = conn._loop
        future = loop.create_future()
        packed = b"".join([_pack(c) for c in commands])
        conn.send(packed, _Many(future, loop.time() + self.timeout_s, len(commands)))
        result: list[Any] = await future
        return result

    async def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """Run ``script`` by its SHA1; on ``NOSCRIPT`` send it whole (``EVAL`` loads it)."""
        try:
            return await self.execute(*script.evalsha(keys, args))
        except NoScriptError:
            return await self.execute(*script.eval(keys, args))

    async def ping(self) -> bool:
        return bool(await self.execute(b"PING"))

    # --- the connection -------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.usable

    async def _connection(self) -> _Connection:
        if self._closed:
            raise RedisConnectionError("this Redis client is closed")
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        opts = self._options
        conn = _Connection(loop, self.timeout_s)
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                if "path" in opts:
                    await loop.create_unix_connection(lambda: conn, str(opts["path"]))
                else:
                    host, port = str(opts.get("host", "127.0.0.1")), int(opts.get("port", 6379))
                    tls = ssl.create_default_context() if opts.get("connection_class") else None
                    await loop.create_connection(lambda: conn, host, port, ssl=tls)
            await self._handshake(conn, loop)
        except TimeoutError:
            conn.drop(RedisTimeoutError("Timeout connecting to Redis"))
            raise RedisTimeoutError(
                f"Timeout connecting to Redis ({self.connect_timeout_s:g}s)"
            ) from None
        except OSError as exc:
            raise RedisConnectionError(f"Error connecting to Redis: {exc}") from None
        self._conn = conn
        self.connects += 1
        return conn

    async def _handshake(self, conn: _Connection, loop: asyncio.AbstractEventLoop) -> None:
        """AUTH and SELECT, when the URL asks for them (one round trip)."""
        opts = self._options
        commands: list[tuple[Arg, ...]] = []
        if opts.get("password"):
            user = opts.get("username")
            auth = (user, opts["password"]) if user else (opts["password"],)
            commands.append((b"AUTH", *(str(a) for a in auth)))
        if int(opts.get("db", 0) or 0):
            commands.append((b"SELECT", int(opts.get("db", 0) or 0)))
        if not commands:
            return
        future = loop.create_future()
        packed = b"".join([_pack(c) for c in commands])
        conn.send(packed, _Many(future, loop.time() + self.connect_timeout_s, len(commands)))
        for reply in await future:
            if isinstance(reply, RedisError):
                conn.drop(reply)
                raise reply

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        if self._conn is not None:
            self._conn.drop(RedisConnectionError("this Redis client is closed"))
            self._conn = None
