"""Shared fixtures: one real local stack per test session, on random loopback ports."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from ephemeral import ephemeral_stack_settings, settings_env

from rtml.flinkrest import FlinkRest
from rtml.stack import Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A running stack (Kafka, Redis, model server, Flink JobManager + TaskManager)."""
    settings = ephemeral_stack_settings(tmp_path_factory.mktemp("stack"))
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
