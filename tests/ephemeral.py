"""Test helpers around throw-away stacks (their settings live in rtml.settings)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from rtml import processes
from rtml.flinkrest import FlinkRest
from rtml.settings import PROJECT_ROOT, ephemeral_stack_settings, settings_env
from rtml.stack import Stack

__all__ = [
    "CHECKPOINT_INTERVAL_S",
    "SETTLE_S",
    "crash_taskmanager",
    "ephemeral_stack_settings",
    "private_featureset",
    "run_rtml",
    "running_job",
    "settings_env",
    "wait_for_checkpoint_after",
]

# The session stack's checkpoint interval (TEST_STACK_CONF in conftest.py; the shipped profile
# has 5 s): what tests read with read_committed is committed by the next checkpoint, and so would
# a duplicate be.
CHECKPOINT_INTERVAL_S = 1.0
# How long tests keep reading after the expected records arrived, for duplicates that must not
# come: three checkpoints.
SETTLE_S = 3 * CHECKPOINT_INTERVAL_S


def run_rtml(
    env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """`rtml ARGS...` as a user runs it, with `env`; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "rtml.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def private_featureset(folder: Path, base: str) -> tuple[str, dict, dict[str, str]]:
    """A copy of a shipped feature set (the real SQL) with a name, topics and ids of its own.

    Returns (name, its YAML as a dict, the environment that points rtml at the copy).
    """
    run = uuid.uuid4().hex[:8]
    name = f"{base}_{run}"
    shipped = PROJECT_ROOT / "sql" / "features"
    features_dir = folder / "features"
    features_dir.mkdir(parents=True)
    definition = yaml.safe_load((shipped / f"{base}.yaml").read_text())
    source_sql = (shipped / definition["source"]["sql"]).resolve()
    (features_dir / definition["source"]["sql"]).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source_sql, (features_dir / definition["source"]["sql"]).resolve())
    shutil.copy(shipped / definition["query"], features_dir)
    definition["name"] = name
    definition["features_topic"] = f"{name}.features"
    definition["source"]["topic"] = f"{name}.transactions"
    definition["source"]["dead_letter_topic"] = f"{name}.dead-letter"
    (features_dir / f"{name}.yaml").write_text(yaml.safe_dump(definition))
    env = {"RTML_FEATURES_DIR": str(features_dir), "RTML_FEATURES_ID_PREFIX": f"it-{run}"}
    return name, definition, env


@contextmanager
def running_job(env: dict[str, str], rest: FlinkRest, job: str, *args: str) -> Iterator[str]:
    """`rtml submit JOB ARGS... --detached`, running; cancelled on the way out."""
    submitted = run_rtml(env, "submit", job, *args, "--detached", timeout=300)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().splitlines()[-1]
    try:
        rest.wait_for_state(job_id, {"RUNNING"}, timeout_s=120)
        yield job_id
    finally:
        rest.cancel(job_id)


def wait_for_checkpoint_after(rest: FlinkRest, job_id: str, after_ms: int) -> None:
    """Until a checkpoint of `job_id` completes after `after_ms` (epoch ms): what came before is
    committed."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        latest = (rest.checkpoints(job_id).get("latest") or {}).get("completed") or {}
        if latest.get("latest_ack_timestamp", 0) > after_ms:
            return
        time.sleep(0.5)
    raise AssertionError(f"no checkpoint of job {job_id} completed after {after_ms}")


def crash_taskmanager(stack: Stack) -> float:
    """`kill -9` the TaskManager and its Python workers at once, as a machine crash would (a
    worker outliving its TaskManager lingers forever); returns when they are gone, with the
    monotonic time of the kill."""
    taskmanager = stack.owned("flink-taskmanager")
    assert taskmanager is not None, "no TaskManager running"
    os.killpg(taskmanager.pid, signal.SIGKILL)  # rtml starts each service in a group of its own
    killed_at = time.monotonic()
    while stack.owned("flink-taskmanager") is not None or processes.group_members(taskmanager.pid):
        assert time.monotonic() - killed_at < 30, "the TaskManager outlived kill -9"
        time.sleep(0.1)
    return killed_at
