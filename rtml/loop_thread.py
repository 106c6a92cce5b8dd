"""An asyncio event loop on a daemon thread of its own.

How rtml's blocking objects do asyncio I/O for synchronous callers (a Flink UDF, a CLI): the
scorer and the Redis writer hand coroutines to their loop thread and wait for the answer, the
loopback server of tests and backtests serves from one. Starting and stopping such a thread has
a right order (a last coroutine closes the connections while the loop still runs, then the loop
stops, the thread ends and only a stopped loop is closed), kept here once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable


def start_loop_thread(
    name: str, loop: asyncio.AbstractEventLoop | None = None
) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """Run `loop` (a new one when None) forever on a daemon thread called `name`."""
    loop = loop or asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=name, daemon=True)
    thread.start()
    return loop, thread


def stop_loop_thread(
    loop: asyncio.AbstractEventLoop,
    thread: threading.Thread | None,
    last: Callable[[], Awaitable[object]] | None = None,
    timeout_s: float = 5.0,
) -> BaseException | None:
    """Await `last()` on the loop (its final I/O), stop the loop and join its thread, each within
    `timeout_s`; close the loop once it has stopped. Returns what `last` raised (a timeout
    included) rather than raising it: the loop is stopped either way, the caller says how much a
    failed last step matters."""
    error: BaseException | None = None
    if last is not None and loop.is_running():
        try:
            asyncio.run_coroutine_threadsafe(_awaited(last), loop).result(timeout=timeout_s)
        except Exception as failed:  # noqa: BLE001 - handed to the caller
            error = failed
    loop.call_soon_threadsafe(loop.stop)
    if thread is not None:
        thread.join(timeout=timeout_s)
    if not loop.is_running():
        loop.close()
    return error


async def _awaited(last: Callable[[], Awaitable[object]]) -> None:
    await last()
