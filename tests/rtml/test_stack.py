"""Stack checks that run before anything starts: Java, ports, binaries. No service is started."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from ephemeral import ephemeral_stack_settings, settings_env

from rtml import processes
from rtml.stack import (
    PYFLINK_HOME,
    Service,
    Stack,
    StackError,
    find_java,
    java_major,
    kafka_cluster_id,
    kafka_server_properties,
)


def test_kafka_cluster_ids_never_look_like_an_option(monkeypatch: pytest.MonkeyPatch) -> None:
    # uuid bytes whose base64 starts with '-' (0xf8 -> "-A"), then ordinary ones
    drawn = iter([uuid.UUID(bytes=b"\xf8" + b"\x00" * 15), uuid.UUID(int=1)])
    monkeypatch.setattr("rtml.stack.uuid.uuid4", lambda: next(drawn))
    cluster_id = kafka_cluster_id()
    assert cluster_id == "AAAAAAAAAAAAAAAAAAAAAQ"
    monkeypatch.undo()
    assert all(not kafka_cluster_id().startswith("-") for _ in range(2000))


def fake_java(folder: Path, version: str) -> Path:
    """A `java` that only answers -version, as an old JDK would."""
    folder.mkdir(parents=True, exist_ok=True)
    java = folder / "java"
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2021-01-19' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    return java


def nothing_started(stack: Stack) -> bool:
    return not any(stack.pid_file(name).exists() for name in stack.services) and not (
        processes.mentioning(str(stack.settings.runtime))
    )


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("no version here", None),
    ],
)
def test_java_major(output: str, major: int | None) -> None:
    assert java_major(output) == major


def test_find_java_prefers_java_home(tmp_path: Path) -> None:
    home_java = fake_java(tmp_path / "jdk" / "bin", "17.0.1")
    path_java = fake_java(tmp_path / "path", "11.0.2")
    assert find_java({"JAVA_HOME": str(tmp_path / "jdk"), "PATH": str(path_java.parent)}) == (
        home_java
    )
    assert find_java({"PATH": str(path_java.parent)}) == path_java
    assert find_java({"PATH": str(tmp_path / "empty")}) is None


def test_missing_java_is_named_and_nothing_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = Stack(ephemeral_stack_settings(tmp_path / "stack"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(StackError) as failure:
        stack.up()
    message = str(failure.value)
    assert "Java 17+ is needed by kafka, flink-jobmanager, flink-taskmanager" in message
    assert "JAVA_HOME" in message
    assert nothing_started(stack)


def test_old_java_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = Stack(ephemeral_stack_settings(tmp_path / "stack"))
    java = fake_java(tmp_path / "jdk11" / "bin", "11.0.2")
    monkeypatch.setenv("JAVA_HOME", str(java.parent.parent))
    with pytest.raises(StackError, match=r"Java 17\+ is needed by kafka.* is version 11"):
        stack.up(["kafka"])
    assert nothing_started(stack)


def test_port_in_use_is_named_and_nothing_starts(tmp_path: Path) -> None:
    settings = ephemeral_stack_settings(tmp_path / "stack")
    stack = Stack(settings)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", settings.flink_rest_port))
        squatter.listen()
        with pytest.raises(StackError) as failure:
            stack.up()
    message = str(failure.value)
    assert f"flink-jobmanager: port 127.0.0.1:{settings.flink_rest_port} is already in use" in (
        message
    )
    assert "kafka" not in message  # only the real problem is reported
    assert nothing_started(stack)


def test_unknown_service_is_refused(tmp_path: Path) -> None:
    stack = Stack(ephemeral_stack_settings(tmp_path / "stack"))
    with pytest.raises(StackError, match="unknown service 'zookeeper'"):
        stack.up(["zookeeper"])


def test_taskmanager_brings_its_jobmanager(tmp_path: Path) -> None:
    stack = Stack(ephemeral_stack_settings(tmp_path / "stack"))
    assert stack._with_dependencies(["flink-taskmanager"]) == {
        "flink-taskmanager",
        "flink-jobmanager",
    }


def test_cli_reports_missing_java_with_exit_code_1(tmp_path: Path) -> None:
    settings = ephemeral_stack_settings(tmp_path / "stack")
    env = {
        "PATH": str(Path(sys.executable).parent),
        "HOME": str(tmp_path),
        **settings_env(settings),
    }
    result = subprocess.run(
        [sys.executable, "-m", "rtml.cli", "stack", "up"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "rtml: error: cannot start the stack" in result.stderr
    assert "Java 17+ is needed" in result.stderr
    assert "redis-server not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_kafka_is_ready_for_exactly_once_sinks(tmp_path: Path) -> None:
    settings = ephemeral_stack_settings(tmp_path / "stack")
    props = kafka_server_properties(settings)
    assert props["auto.create.topics.enable"] == "false"
    # Flink's sink sets transaction.timeout.ms up to 1 h; the broker must allow it.
    assert int(props["transaction.max.timeout.ms"]) >= 3_600_000
    assert props["listeners"].startswith(f"PLAINTEXT://127.0.0.1:{settings.kafka_port},")
    assert props["transaction.state.log.replication.factor"] == "1"


def test_the_flink_client_works_without_a_local_stack(tmp_path: Path) -> None:
    stack = Stack(ephemeral_stack_settings(tmp_path / "never-started"))
    env = stack.flink_client_env()
    assert env["FLINK_CONF_DIR"] == str(stack.settings.flink_conf_dir)
    assert env["FLINK_LIB_DIR"] == str(PYFLINK_HOME / "lib")
    # Once `stack up` rendered them, the client uses the stack's own folders.
    (tmp_path / "never-started" / "flink-conf").mkdir(parents=True)
    (tmp_path / "never-started" / "flink-conf" / "config.yaml").write_text("{}")
    (tmp_path / "never-started" / "flink-lib").mkdir()
    env = stack.flink_client_env()
    assert env["FLINK_CONF_DIR"] == str(stack.settings.runtime / "flink-conf")
    assert env["FLINK_LIB_DIR"] == str(stack.settings.runtime / "flink-lib")


def test_a_restarted_service_first_stops_what_its_dead_predecessor_left(tmp_path: Path) -> None:
    # Like a TaskManager killed with -9: the leader is gone, its child lives on in its group.
    stack = Stack(ephemeral_stack_settings(tmp_path / "stack"))
    stack.services = {
        "fake": Service(
            "fake", ports=(), needs_java=False,
            argv=lambda: ["sh", "-c", "sleep 300 & wait"], ready=lambda owned: True,
        )
    }  # fmt: skip
    try:
        assert stack.up() == ["fake"]
        first = stack.owned("fake")
        assert first is not None
        deadline = time.monotonic() + 10
        while len(processes.group_members(first.pid)) < 2:  # sh and its sleep
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        (child,) = set(processes.group_members(first.pid)) - {first.pid}
        os.kill(first.pid, signal.SIGKILL)
        while stack.owned("fake") is not None:
            assert time.monotonic() < deadline, "the leader outlived kill -9"
            time.sleep(0.05)
        assert processes.group_members(first.pid) == [child]  # the orphan, still running

        assert stack.up() == ["fake"]
        assert processes.group_members(first.pid) == []  # gone before the new one started
    finally:
        stack.down()
