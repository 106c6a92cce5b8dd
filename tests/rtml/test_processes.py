"""Unit tests of process ownership: real short-lived processes, pid files in tmp_path."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rtml import processes
from rtml.processes import Owned

Spawner = Callable[..., Owned]


def _wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _state(pid: int) -> str | None:
    """The kernel's one-letter state of `pid`, or None when it no longer exists."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawner]:
    """Start processes in their own groups; kill whatever of ours is left at the end."""
    started: list[Owned] = []

    def start(argv: list[str], name: str = "p", **info: str) -> Owned:
        owned = processes.spawn(
            argv,
            pid_file=tmp_path / "run" / f"{name}.pid",
            log_file=tmp_path / "logs" / f"{name}.log",
            env=dict(os.environ),
            cwd=tmp_path,
            info=info or None,
        )
        started.append(owned)
        return owned

    yield start
    for owned in started:
        if processes.is_alive(owned) or processes.group_members(owned.pid):
            os.killpg(owned.pid, signal.SIGKILL)


def test_spawn_records_pid_file_and_runs(spawn: Spawner, tmp_path: Path) -> None:
    owned = spawn(["sleep", "60"], name="sleeper", role="test")

    record = json.loads((tmp_path / "run" / "sleeper.pid").read_text())
    assert record == {"pid": owned.pid, "start_ticks": owned.start_ticks, "info": {"role": "test"}}
    assert owned.start_ticks == processes.start_ticks(owned.pid)
    assert processes.read_pid_file(tmp_path / "run" / "sleeper.pid") == owned
    assert processes.is_alive(owned)
    assert os.getpgid(owned.pid) == owned.pid  # its own process group (and session)
    assert os.getsid(owned.pid) == owned.pid
    log = (tmp_path / "logs" / "sleeper.log").read_text()
    assert "rtml started at" in log
    assert "['sleep', '60']" in log


def test_spawn_appends_to_the_log(spawn: Spawner, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "echo.log"
    log.parent.mkdir(parents=True)
    log.write_text("earlier run\n")
    owned = spawn(["sh", "-c", "echo out; echo err >&2"], name="echo")
    assert _wait_for(lambda: not processes.is_alive(owned))
    text = log.read_text()
    assert text.startswith("earlier run\n")
    assert _wait_for(lambda: "err" in log.read_text())
    text = log.read_text()
    assert text.index("rtml started at") < text.index("out\n")
    assert "err\n" in text


def test_terminate_stops_the_process(spawn: Spawner) -> None:
    owned = spawn(["sleep", "60"])
    started = time.monotonic()
    processes.terminate(owned, grace_s=5)
    assert time.monotonic() - started < 3  # SIGTERM was enough; no need to wait out the grace
    assert not processes.is_alive(owned)
    assert processes.group_members(owned.pid) == []


def _sleeping_children(pgid: int) -> list[int]:
    """Members of group `pgid` other than its leader that already run `sleep`."""
    children = []
    for pid in processes.group_members(pgid):
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if pid != pgid and argv0 == b"sleep":
            children.append(pid)
    return children


def test_terminate_kills_the_whole_group(spawn: Spawner) -> None:
    owned = spawn(["sh", "-c", "sleep 60 & wait"], name="shell")
    assert _wait_for(lambda: len(_sleeping_children(owned.pid)) == 1)
    (child,) = _sleeping_children(owned.pid)

    processes.terminate(owned, grace_s=5)

    assert not processes.is_alive(owned)
    # terminate() waits for the leader only; a signalled child may take a moment to exit
    assert _wait_for(lambda: processes.group_members(owned.pid) == [], timeout_s=2)
    assert _state(child) in {None, "Z"}


def test_terminate_escalates_to_sigkill(spawn: Spawner) -> None:
    # SIG_IGN survives exec, so both the shell and its sleep ignore SIGTERM
    owned = spawn(["sh", "-c", "trap '' TERM; sleep 60 & wait"], name="stubborn")
    assert _wait_for(lambda: len(_sleeping_children(owned.pid)) == 1)
    started = time.monotonic()
    processes.terminate(owned, grace_s=0.5)
    assert 0.5 <= time.monotonic() - started < 4
    assert not processes.is_alive(owned)
    assert _wait_for(lambda: processes.group_members(owned.pid) == [], timeout_s=2)


def test_terminate_after_the_leader_died_kills_left_over_children(spawn: Spawner) -> None:
    owned = spawn(["sh", "-c", "sleep 60 & wait"], name="orphans")
    assert _wait_for(lambda: len(_sleeping_children(owned.pid)) == 1)
    os.kill(owned.pid, signal.SIGKILL)  # only the leader; its sleep lives on in the group
    assert _wait_for(lambda: not processes.is_alive(owned))
    assert len(processes.group_members(owned.pid)) == 1

    processes.terminate(owned, grace_s=5)

    assert _wait_for(lambda: processes.group_members(owned.pid) == [])


def test_group_members_of_unused_group_is_empty() -> None:
    assert processes.group_members(_unused_pid()) == []


def test_is_alive_false_for_a_zombie() -> None:
    child = subprocess.Popen(["true"])
    owned = Owned(child.pid, processes.start_ticks(child.pid) or -1, {})
    try:
        assert _wait_for(lambda: _state(child.pid) == "Z")  # exited, not yet reaped
        assert processes.start_ticks(child.pid) == owned.start_ticks
        assert not processes.is_alive(owned)
    finally:
        child.wait()
    assert not processes.is_alive(owned)


def test_start_ticks_of_missing_pid_is_none() -> None:
    assert processes.start_ticks(_unused_pid()) is None


def test_start_ticks_is_stable_and_parses_names_with_spaces_and_parens(
    spawn: Spawner, tmp_path: Path
) -> None:
    assert processes.start_ticks(os.getpid()) == processes.start_ticks(os.getpid())
    odd = tmp_path / "a) b (c"  # /proc/PID/stat shows it as "(a) b (c)"
    odd.symlink_to(subprocess.check_output(["sh", "-c", "command -v sleep"], text=True).strip())
    owned = spawn([str(odd), "60"], name="odd")
    assert _wait_for(lambda: "(a) b (c)" in Path(f"/proc/{owned.pid}/stat").read_text())
    assert processes.start_ticks(owned.pid) == owned.start_ticks
    assert processes.is_alive(owned)
    assert processes.group_members(owned.pid) == [owned.pid]
    # the right field: a process started just now started about `uptime` seconds after boot
    uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    assert abs(owned.start_ticks / os.sysconf("SC_CLK_TCK") - uptime_s) < 5


def _unused_pid() -> int:
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


# --- pid files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00garbage",
        b"[]",
        b"null",
        b"42",
        b'{"pid": 1}',
        b'{"start_ticks": 1}',
        b'{"pid": "abc", "start_ticks": 1}',
        b'{"pid": null, "start_ticks": 1}',
        b'{"pid": 1, "start_ticks": 2, "info": [1]}',
    ],
)
def test_read_pid_file_of_garbage_is_none(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.pid"
    path.write_bytes(content)
    assert processes.read_pid_file(path) is None


def test_read_pid_file_missing_is_none(tmp_path: Path) -> None:
    assert processes.read_pid_file(tmp_path / "none.pid") is None
    assert processes.read_pid_file(tmp_path) is None  # a folder, not a file


def test_read_pid_file_without_info(tmp_path: Path) -> None:
    path = tmp_path / "x.pid"
    path.write_text('{"pid": 12, "start_ticks": 34}')
    assert processes.read_pid_file(path) == Owned(12, 34, {})


def test_reused_pid_is_not_alive(spawn: Spawner, tmp_path: Path) -> None:
    live = spawn(["sleep", "60"], name="live")
    # A pid file left by an earlier process whose pid the kernel gave to `live`.
    stale_file = tmp_path / "stale.pid"
    stale_file.write_text(json.dumps({"pid": live.pid, "start_ticks": live.start_ticks - 1}))
    stale = processes.read_pid_file(stale_file)

    assert stale == Owned(live.pid, live.start_ticks - 1, {})
    assert not processes.is_alive(stale)
    assert processes.is_alive(live)


def test_terminate_with_stale_pid_file_leaves_the_new_owner_alone(spawn: Spawner) -> None:
    live = spawn(["sleep", "60"], name="stranger")  # a group leader, like any daemon
    stale = Owned(live.pid, live.start_ticks - 1, {})

    processes.terminate(stale, grace_s=1)

    time.sleep(0.1)
    assert processes.is_alive(live)


# --- ports -------------------------------------------------------------------------------------


def test_port_in_use_for_a_listening_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert processes.port_in_use(port)
    assert not processes.port_in_use(port)


def test_port_in_use_for_a_bound_socket_without_reuseaddr() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        assert processes.port_in_use(holder.getsockname()[1])


def test_free_port_is_free_and_bindable() -> None:
    port = processes.free_port()
    assert 1024 <= port <= 65535
    assert not processes.port_in_use(port)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        assert processes.port_in_use(port)
