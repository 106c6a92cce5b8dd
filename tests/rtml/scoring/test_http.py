"""The small keep-alive HTTP/1.1 client, against tiny real servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest

from rtml.scoring.http import ConnectError, HttpClient, build_request, parse_base_url, parse_head

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return await reader.readexactly(length)


def _run(handler: Handler, client_code: Callable[[HttpClient], Awaitable[None]]) -> None:
    async def main() -> None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = HttpClient(f"http://127.0.0.1:{port}", max_idle=2)
        try:
            await client_code(client)
        finally:
            client.close()
            server.close()

    asyncio.run(main())


def test_pure_helpers() -> None:
    assert parse_base_url("http://h:81/prefix/") == ("h", 81, "/prefix")
    assert parse_base_url("http://h") == ("h", 80, "")
    with pytest.raises(ValueError):
        parse_base_url("https://h")
    request = build_request("POST", "h", 81, "/x", b"{}")
    assert request.startswith(b"POST /x HTTP/1.1\r\nHost: h:81\r\n")
    assert request.endswith(b"Content-Length: 2\r\n\r\n{}")
    assert parse_head(b"HTTP/1.1 503 Service Unavailable\r\nX-A: b") == (
        503, "Service Unavailable", {"x-a": "b"},
    )  # fmt: skip
    with pytest.raises(ConnectError):
        parse_head(b"SSH-2.0-OpenSSH")


def test_keep_alive_reuses_one_connection_and_reads_chunked_bodies() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                body = await _read_request(reader)
            except asyncio.IncompleteReadError:
                break
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"3\r\n" + body[:3] + b"\r\n" + b"%x\r\n" % len(body[3:]) + body[3:])
            writer.write(b"\r\n0\r\n\r\n")
            await writer.drain()
        writer.close()

    async def client_code(client: HttpClient) -> None:
        for text in (b'{"a": 1}', b'{"bb": 22}', b'{"ccc": 333}'):
            response = await client.post("/echo", text)
            assert (response.status, response.body) == (200, text)

    _run(handler, client_code)
    assert connections == 1


def test_a_connection_closed_while_idle_is_replaced_transparently() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # answers, then hangs up without saying "Connection: close"

    async def client_code(client: HttpClient) -> None:
        for _ in range(3):
            assert (await client.post("/", b"{}")).body == b"ok"
            await asyncio.sleep(0.01)  # let the FIN arrive
        assert client.connections_opened == 3

    _run(handler, client_code)


def test_a_fresh_connection_dropped_unanswered_is_a_connect_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.close()

    async def client_code(client: HttpClient) -> None:
        with pytest.raises(ConnectError, match="before an answer"):
            await client.post("/", b"{}")

    _run(handler, client_code)


def test_a_body_cut_short_is_a_connect_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        await writer.drain()
        writer.close()

    async def client_code(client: HttpClient) -> None:
        with pytest.raises(ConnectError, match="mid-answer"):
            await client.post("/", b"{}")

    _run(handler, client_code)


def test_refused_connection_is_a_connect_error() -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectError, match="cannot connect"):
            await HttpClient(f"http://127.0.0.1:{port}").post("/", b"{}")

    asyncio.run(main())


def test_a_timed_out_request_drops_its_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = await _read_request(reader)
        if body == b"slow":
            await asyncio.sleep(0.2)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError):
            await _read_request(reader)  # keep-alive: wait for the next request
        writer.close()

    async def client_code(client: HttpClient) -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await client.post("/", b"slow")
        # the late answer to "slow" must not be taken for the answer to "fast"
        assert (await client.post("/", b"fast")).body == b"fast"
        assert client.connections_opened == 2

    _run(handler, client_code)
