"""rtml.loop_thread: a loop on a thread of its own, its last coroutine, and a clean stop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from rtml.loop_thread import start_loop_thread, stop_loop_thread


def test_the_last_coroutine_runs_on_the_loop_thread_before_the_loop_stops_and_closes() -> None:
    loop, thread = start_loop_thread("rtml-test-loop")
    assert thread.name == "rtml-test-loop" and thread.daemon
    ran_on: list[str] = []

    async def last() -> None:
        ran_on.append(threading.current_thread().name)

    assert stop_loop_thread(loop, thread, last, timeout_s=5) is None
    assert ran_on == ["rtml-test-loop"]
    assert not thread.is_alive()
    assert loop.is_closed()


def test_a_failing_last_step_is_returned_and_the_loop_stops_anyway() -> None:
    loop, thread = start_loop_thread("rtml-test-loop")

    async def last() -> None:
        raise ConnectionResetError("gone")

    error = stop_loop_thread(loop, thread, last, timeout_s=5)
    assert isinstance(error, ConnectionResetError)
    assert not thread.is_alive() and loop.is_closed()


@pytest.mark.filterwarnings("ignore:Task was destroyed but it is pending")
def test_a_last_step_that_hangs_is_given_up_after_the_timeout() -> None:
    loop, thread = start_loop_thread("rtml-test-loop")

    async def last() -> None:
        await asyncio.sleep(60)

    started = time.monotonic()
    error = stop_loop_thread(loop, thread, last, timeout_s=0.2)
    assert isinstance(error, TimeoutError)
    assert time.monotonic() - started < 5
    assert not thread.is_alive() and loop.is_closed()


def test_a_given_loop_is_the_one_run_and_a_stopped_one_gets_no_last_step() -> None:
    given = asyncio.new_event_loop()
    loop, thread = start_loop_thread("rtml-test-loop", given)
    assert loop is given
    assert asyncio.run_coroutine_threadsafe(asyncio.sleep(0, "ok"), loop).result(5) == "ok"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    called: list[bool] = []

    def last() -> asyncio.Future[None]:  # never called: nothing would run it
        called.append(True)
        return asyncio.sleep(0)

    assert stop_loop_thread(loop, None, last, timeout_s=1) is None
    assert called == [] and loop.is_closed()
