"""Throw-away stacks for tests: their own folder and free loopback ports (shared jars and venvs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rtml import processes
from rtml.settings import StackSettings

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


def run_rtml(
    env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """`rtml ARGS...` as a user runs it, with `env`; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "rtml.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
