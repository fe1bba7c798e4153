"""The upstream HTTP/1.1 client over real sockets: keep-alive, bodies of every framing,
compression, timeouts, stale connections, broken servers, cancellation."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hyperinfer.client.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from hyperinfer.client.providers.http1 import Http1Pool
from hyperinfer.client.testing.fake_upstream import FakeUpstream
from hyperinfer.runtime.testing.servers import free_port

JSON = {"content-type": "application/json"}
CHAT = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def pool() -> AsyncIterator[Http1Pool]:
    client = Http1Pool(connect_timeout_s=1.0)
    yield client
    await client.aclose()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """``await serve(handler)``: a raw TCP server on a free port; its base URL."""
    servers: list[asyncio.Server] = []
    handling: set[asyncio.Task[None]] = set()

    async def start(handler: Handler) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handling.add(task)
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()
                handling.discard(task)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for task in list(handling):
        task.cancel()
    await asyncio.gather(*handling, return_exceptions=True)
    for server in servers:
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


async def test_keep_alive_connections_are_reused(pool: Http1Pool) -> None:
    async with FakeUpstream() as fake:
        url = fake.url + "/v1/chat/completions"
        for _ in range(20):
            status, headers, body = await pool.post(url, CHAT, JSON, 5)
            assert status == 200
            assert b"echo: hi" in body
            assert headers["content-type"].startswith("application/json")
        assert pool.opened == 1
        answers = await asyncio.gather(*(pool.post(url, CHAT, JSON, 5) for _ in range(10)))
        assert all(status == 200 for status, _, _ in answers)
        assert pool.opened <= 10
        assert pool.idle_connections == pool.opened


async def test_streamed_chunked_answer_arrives_piece_by_piece(pool: Http1Pool) -> None:
    async with FakeUpstream() as fake:
        fake.configure(answer="one two three", per_token_s=0.02)
        body = CHAT[:-1] + b', "stream": true}'
        async with pool.stream(fake.url + "/v1/chat/completions", body, JSON, 5) as response:
            assert response.status == 200
            pieces = [piece async for piece in response.chunks()]
        assert len(pieces) > 3  # not buffered into one
        text = b"".join(pieces)
        assert text.rstrip().endswith(b"data: [DONE]")
        assert pool.idle_connections == 1  # the chunked body ended cleanly: kept


async def test_gzip_body_and_a_body_that_ends_with_the_connection(
    pool: Http1Pool, serve: Callable[[Handler], Awaitable[str]]
) -> None:
    async def gzipped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        data = gzip.compress(b'{"ok": true}')
        head = f"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: {len(data)}\r\n\r\n"
        writer.write(head.encode() + data)
        await writer.drain()

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        await writer.drain()

    assert (await pool.post(await serve(gzipped), b"{}", JSON, 5))[2] == b'{"ok": true}'
    assert (await pool.post(await serve(until_close), b"{}", JSON, 5))[2] == b"all of it"


async def test_a_connection_the_server_closed_while_idle_is_retried_once(
    pool: Http1Pool, serve: Callable[[Handler], Awaitable[str]]
) -> None:
    async def one_answer_per_connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")  # claims keep-alive
        await writer.drain()

    url = await serve(one_answer_per_connection)
    assert (await pool.post(url, b"{}", JSON, 5))[2] == b"ok"
    await asyncio.sleep(0.05)  # the server has closed it by now
    assert (await pool.post(url, b"{}", JSON, 5))[2] == b"ok"
    assert pool.opened == 2


async def test_broken_and_unreachable_servers_are_upstream_errors(
    pool: Http1Pool, serve: Callable[[Handler], Awaitable[str]]
) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: nope\r\n\r\n")
        await writer.drain()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()

    with pytest.raises(UpstreamProtocolError, match="malformed HTTP"):
        await pool.post(await serve(garbage), b"{}", JSON, 5)
    with pytest.raises(UpstreamProtocolError, match="broke the connection"):
        await pool.post(await serve(hang_up), b"{}", JSON, 5, label="backend cut")
    with pytest.raises(UpstreamConnectError, match="unreachable"):
        await pool.post(f"http://127.0.0.1:{free_port()}/v1", b"{}", JSON, 5)
    with pytest.raises(UpstreamError, match="line break"):
        await pool.post(await serve(garbage), b"{}", {"x-evil": "a\r\nhost: b"}, 5)


async def test_timeouts_free_the_connection(serve: Callable[[Handler], Awaitable[str]]) -> None:
    pool = Http1Pool(max_connections=1)
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await release.wait()

    async def stalls_mid_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()

    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(UpstreamTimeout, match=r"backend slow did not answer within 0\.2s"):
            await pool.post(await serve(silent), b"{}", JSON, 0.2, label="backend slow")
        assert asyncio.get_running_loop().time() - started < 1.0
        received: list[bytes] = []

        async def read_stream(url: str) -> None:
            async with pool.stream(url, b"{}", JSON, 0.2) as response:
                async for piece in response.chunks():
                    received.append(piece)

        with pytest.raises(UpstreamTimeout):
            await read_stream(await serve(stalls_mid_stream))
        assert received == [b"first"]
        async with FakeUpstream() as fake:  # the single slot is free again
            status, _, _ = await pool.post(fake.url + "/v1/chat/completions", CHAT, JSON, 5)
            assert status == 200
    finally:
        release.set()
        await pool.aclose()


async def test_a_cancelled_caller_gives_its_connection_back(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    pool = Http1Pool(max_connections=1)
    release = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await release.wait()

    try:
        call = asyncio.ensure_future(pool.post(await serve(slow), b"{}", JSON, 30))
        await asyncio.sleep(0.1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        async with FakeUpstream() as fake:
            status, _, _ = await pool.post(fake.url + "/v1/chat/completions", CHAT, JSON, 2)
            assert status == 200
    finally:
        release.set()
        await pool.aclose()
