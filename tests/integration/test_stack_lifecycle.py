"""A whole stack of its own: idempotent `up`, `status`, `down` leaving nothing; failed starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ephemeral import ephemeral_stack_settings, run_rtml, settings_env

from rtml import flinkconf, processes
from rtml.stack import Stack, StackError

pytestmark = pytest.mark.integration


def test_up_is_idempotent_and_down_leaves_no_process(tmp_path: Path) -> None:
    settings = ephemeral_stack_settings(tmp_path / "stack")
    env = {**os.environ, **settings_env(settings)}
    stack = Stack(settings)
    try:
        first = run_rtml(env, "stack", "up")
        assert first.returncode == 0, first.stderr
        assert "started: kafka, redis, model-server, flink-jobmanager, flink-taskmanager" in (
            first.stdout
        )
        pids = {name: stack.owned(name).pid for name in stack.services}  # type: ignore[union-attr]

        again = run_rtml(env, "stack", "up")
        assert again.returncode == 0, again.stderr
        assert "started: nothing (all running)" in again.stdout
        assert {name: stack.owned(name).pid for name in stack.services} == pids  # type: ignore[union-attr]

        status = run_rtml(env, "stack", "status")
        assert status.returncode == 0, status.stdout
        for name, pid in pids.items():
            assert any(
                line.split()[:3] == [name, "healthy", str(pid)]
                for line in status.stdout.splitlines()
            ), status.stdout
    finally:
        down = run_rtml(env, "stack", "down")
    assert down.returncode == 0, down.stderr
    assert processes.mentioning(str(settings.runtime)) == []
    for pid in pids.values():
        assert processes.group_members(pid) == [], "a child of a stopped service is still running"
    for port in (settings.kafka_port, settings.redis_port, settings.flink_rest_port,
                 settings.model_http_port):  # fmt: skip
        assert not processes.port_in_use(port)
    stopped = run_rtml(env, "stack", "status")
    assert stopped.returncode == 3  # not healthy: stopped
    assert stopped.stdout.count(" stopped ") == len(stack.services)


def test_a_service_that_fails_to_start_is_named_and_the_rest_is_stopped(tmp_path: Path) -> None:
    # A JobManager with too little memory exits at once: a real start failure, not a mock.
    conf_dir = flinkconf.with_overrides(tmp_path, {"jobmanager.memory.process.size": "64m"})
    settings = ephemeral_stack_settings(tmp_path / "stack", flink_conf_dir=conf_dir)
    stack = Stack(settings)

    with pytest.raises(StackError) as failure:
        stack.up(["redis", "flink-jobmanager"])
    message = str(failure.value)
    assert message.startswith("flink-jobmanager exited during start-up")
    assert str(stack.log_file("flink-jobmanager")) in message
    # Redis started first and was stopped again: nothing half-started is left.
    assert stack.log_file("redis").exists()
    assert processes.mentioning(str(settings.runtime)) == []
    assert not processes.port_in_use(settings.redis_port)
    assert all(row.state == "stopped" for row in stack.status())
