"""Shared fixtures: one real local stack per test session, on random loopback ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtml import processes
from rtml.settings import StackSettings
from rtml.stack import Stack

PORT_FIELDS = (
    "kafka_port",
    "kafka_controller_port",
    "redis_port",
    "flink_rest_port",
    "flink_rpc_port",
    "model_http_port",
    "model_grpc_port",
    "model_metrics_port",
)


def ephemeral_stack_settings(runtime_dir: Path, **overrides: object) -> StackSettings:
    """Settings for a throw-away stack: its own folder and free ports (shared jars and venvs)."""
    ports: dict[str, int] = {}
    while len(set(ports.values())) < len(PORT_FIELDS):
        ports = {name: processes.free_port() for name in PORT_FIELDS}
    return StackSettings(runtime_dir=runtime_dir, **ports, **overrides)  # type: ignore[arg-type]


def settings_env(settings: StackSettings) -> dict[str, str]:
    """Environment variables that make `rtml` commands and jobs use `settings`'s stack."""
    env = {f"RTML_{name.upper()}": str(getattr(settings, name)) for name in PORT_FIELDS}
    env["RTML_RUNTIME_DIR"] = str(settings.runtime)
    env["RTML_HOME"] = str(settings.home)
    return env


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
