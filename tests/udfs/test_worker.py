"""udfs.worker: the worker's heap at open leaves the cycle collector's full passes."""

from __future__ import annotations

import gc
import weakref

from udfs.worker import freeze_startup_heap


class _Node:
    me: _Node | None = None


def test_what_the_worker_holds_is_frozen_and_what_is_garbage_is_collected_first() -> None:
    held = [_Node() for _ in range(1000)]
    garbage = _Node()
    garbage.me = garbage  # a cycle: only the collector frees it
    gone = weakref.ref(garbage)
    del garbage

    freeze_startup_heap()

    assert gone() is None
    assert gc.get_freeze_count() >= len(held)
    assert not any(o is held for o in gc.get_objects())  # in no generation a pass walks
