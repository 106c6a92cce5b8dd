"""Test helpers around throw-away stacks (their settings live in rtml.settings)."""

from __future__ import annotations

import subprocess
import sys

from rtml.settings import ephemeral_stack_settings, settings_env

__all__ = ["ephemeral_stack_settings", "run_rtml", "settings_env"]


def run_rtml(
    env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """`rtml ARGS...` as a user runs it, with `env`; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "rtml.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
