"""A small asyncio HTTP/1.1 client with keep-alive connections to one server.

Why not aiohttp or httpx: neither is in the project's environment, and the scorer needs little —
POST a JSON body to one host, reuse connections, and throw a connection away the moment an
attempt times out (its answer may still arrive and would be read by the next request). This does
exactly that in ~150 lines with no dependency; see bench/scorer.py for its rate against MLServer.

Understands Content-Length and chunked answers. A reused connection that the server closed while
idle (EOF or reset before the first byte of the answer) is retried once on a fresh connection:
that is a keep-alive race, not a failure of the server.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

_MAX_HEADER_BYTES = 64 * 1024


class ConnectError(OSError):
    """The server could not be reached, or the connection broke before a complete answer."""


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names
    body: bytes


def parse_base_url(base_url: str) -> tuple[str, int, str]:
    """(host, port, path prefix) of an ``http://host[:port][/prefix]`` URL."""
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"expected http://host[:port], got {base_url!r}")
    return parts.hostname, parts.port or 80, parts.path.rstrip("/")


def build_request(method: str, host: str, port: int, path: str, body: bytes) -> bytes:
    """The bytes of one HTTP/1.1 request with a JSON body (pure)."""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nAccept: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    """(status, reason, headers) of a response head ending in a blank line (pure)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ConnectError(f"not an HTTP/1.x status line: {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ConnectError(f"malformed header line: {line[:100]!r}")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()  # no wait_closed(): a stalled peer must not hold us up


class HttpClient:
    """Keep-alive HTTP/1.1 connections to one ``http://host:port``, at most `max_idle` kept idle.

    Use from one event loop. A request cancelled or timed out by its caller drops its connection.
    """

    def __init__(self, base_url: str, *, max_idle: int = 4, connect_timeout_s: float = 1.0):
        self.host, self.port, self.prefix = parse_base_url(base_url)
        self.max_idle = max_idle
        self.connect_timeout_s = connect_timeout_s
        self._idle: list[_Connection] = []
        self.connections_opened = 0

    async def post(self, path: str, body: bytes) -> Response:
        """POST `body` (JSON) to `path`; ConnectError if the server is unreachable or hangs up."""
        request = build_request("POST", self.host, self.port, self.prefix + path, body)
        while self._idle:
            connection = self._idle.pop()
            try:
                return await self._exchange(connection, request, reused=True)
            except _StaleConnection:
                continue  # closed by the server while idle: try the next one, or a new one
        connection = await self._connect()
        return await self._exchange(connection, request, reused=False)

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=_MAX_HEADER_BYTES),
                self.connect_timeout_s,
            )
        except TimeoutError as error:
            raise ConnectError(f"connecting to {self.host}:{self.port} timed out") from error
        except OSError as error:
            raise ConnectError(f"cannot connect to {self.host}:{self.port}: {error}") from error
        self.connections_opened += 1
        return _Connection(reader, writer)

    async def _exchange(self, connection: _Connection, request: bytes, reused: bool) -> Response:
        done = False
        try:
            try:
                connection.writer.write(request)
                await connection.writer.drain()
                head = await connection.reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError) as error:
                if reused and not getattr(error, "partial", b""):
                    raise _StaleConnection() from error
                raise ConnectError(f"connection closed before an answer: {error!r}") from error
            except asyncio.LimitOverrunError as error:
                raise ConnectError("response head too large") from error
            status, reason, headers = parse_head(head[:-4])
            try:
                body = await self._read_body(connection.reader, headers)
            except (asyncio.IncompleteReadError, ConnectionError) as error:
                raise ConnectError(f"connection dropped mid-answer: {error!r}") from error
            keep = headers.get("connection", "").lower() != "close" and (
                "content-length" in headers or "transfer-encoding" in headers
            )  # a body that ends at EOF leaves nothing to reuse
            done = True
            if keep and len(self._idle) < self.max_idle:
                self._idle.append(connection)
            else:
                connection.close()
            return Response(status, reason, headers, body)
        finally:
            if not done:  # failed, timed out or cancelled: the connection's state is unknown
                connection.close()

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
        length = headers.get("content-length")
        if length is not None:
            return await reader.readexactly(int(length))
        return await reader.read()  # no length: the body ends when the server closes


class _StaleConnection(Exception):
    pass
