"""A small HTTP/1.1 JSON server on 127.0.0.1, on an event loop thread of its own.

The V2 stub of the tests (`rtml.testing.v2_stub_server`) and the backtest's server of candidate
models (`rtml.backtest.local_server`) answer the same few requests of one client, the scorer's
keep-alive connections: a subclass writes `handle`, this does the rest. Content-Length bodies
only; an answer of None closes the connection unanswered.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from rtml.loop_thread import start_loop_thread, stop_loop_thread

REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
           504: "Gateway Timeout"}  # fmt: skip

Answer = tuple[int, Any] | None  # (status, JSON-able payload or raw bytes), or None: hang up


class LoopbackJsonServer:
    """Listens on 127.0.0.1:`port` (0: a free one); `start`/`stop`, or a `with` block."""

    thread_name = "rtml-loopback-http"

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(self, method: str, path: str, body: bytes) -> Answer:
        raise NotImplementedError

    def connection_opened(self) -> None:
        """Called on the loop thread for each new connection (a hook for counting)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Any:  # the subclass, for `with Server(...) as server`
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Any:
        """Listen and serve from a background thread; returns self."""
        loop = asyncio.new_event_loop()
        self._server = loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._loop, self._thread = start_loop_thread(self.thread_name, loop)
        return self

    def stop(self) -> None:
        """Stop listening and end every connection (clients see refused or reset connections)."""
        loop = self._loop
        if loop is None:
            return
        error = stop_loop_thread(loop, self._thread, self._shutdown, timeout_s=5)
        self._loop = None
        if error is not None:
            raise error

    async def serve_forever(self) -> None:
        """Serve on the current event loop (a command line's way), until cancelled."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        async with self._server:
            await self._server.serve_forever()

    def serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):  # kept-alive connections, or answers still sleeping
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.connection_opened()
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                    return
                method, path, length = _parse_head(head)
                body = await reader.readexactly(length) if length else b""
                try:
                    answer = await self.handle(method, path, body)
                except Exception as error:  # noqa: BLE001 - a bug in a handler must still answer
                    answer = 500, {"error": f"server failed: {error!r}"[:300]}
                if answer is None:
                    return
                status, payload = answer
                data = (
                    payload
                    if isinstance(payload, bytes)
                    else json.dumps(payload, separators=(",", ":")).encode()
                )
                writer.write(
                    f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                    .encode("latin-1") + data
                )  # fmt: skip
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            # stop() ends kept-alive connections. Returning (not raising) keeps Python 3.11's
            # stream callback, which calls task.exception(), from logging the cancellation.
            return
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()


def _parse_head(head: bytes) -> tuple[str, str, int]:
    """(method, path, Content-Length) of a request head ending in a blank line (pure)."""
    lines = head.decode("latin-1").split("\r\n")
    method, _, rest = lines[0].partition(" ")
    path = rest.rsplit(" ", 1)[0]
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            length = int(value.strip())
    return method, path, length
