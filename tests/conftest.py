"""Shared fixtures: one real local stack per test session, on random loopback ports."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from ephemeral import CHECKPOINT_INTERVAL_S, ephemeral_stack_settings, settings_env

from rtml import flinkconf
from rtml.flinkrest import FlinkRest
from rtml.stack import Stack

# The shipped profile checkpoints every 5 s; the session stack every second, so that what the
# tests read with read_committed (committed by each checkpoint) shows up sooner. Exactly-once,
# recovery and savepoints work the same at any interval.
TEST_STACK_CONF = {
    "execution.checkpointing.interval": f"{CHECKPOINT_INTERVAL_S * 1000:.0f}ms",
    "execution.checkpointing.min-pause": f"{CHECKPOINT_INTERVAL_S * 500:.0f}ms",
}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A running stack (Kafka, Redis, model server, Flink JobManager + TaskManager)."""
    folder = tmp_path_factory.mktemp("stack")
    settings = ephemeral_stack_settings(
        folder / "runtime", flink_conf_dir=flinkconf.with_overrides(folder, TEST_STACK_CONF)
    )
    running = Stack(settings)
    try:
        running.up()
    except BaseException:
        running.down()
        raise
    yield running
    running.down()


@pytest.fixture(scope="session")
def stack_env(stack: Stack) -> dict[str, str]:
    """`os.environ` plus what points rtml commands at the session's stack."""
    return {**os.environ, **settings_env(stack.settings)}


@pytest.fixture
def rest(stack: Stack) -> FlinkRest:
    """The session stack's Flink REST API."""
    return FlinkRest(stack.settings.flink_rest_url)
