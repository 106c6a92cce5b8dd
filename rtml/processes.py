"""Start, find and stop the background processes rtml owns, by pid files that cannot be fooled.

A pid file records the process's start time as well as its pid, so a pid the kernel has since reused
for somebody else's process is never mistaken for ours and never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Owned:
    """A process rtml started: its pid, its kernel start time, and free-form facts about it."""

    pid: int
    start_ticks: int
    info: dict[str, str]


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; fields after it are plain.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def is_alive(owned: Owned) -> bool:
    """True while the very process we started runs (not a zombie, not a reused pid)."""
    if start_ticks(owned.pid) != owned.start_ticks:
        return False
    try:
        state = Path(f"/proc/{owned.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def read_pid_file(path: Path) -> Owned | None:
    """The process recorded in `path`, or None when there is no readable record."""
    try:
        record = json.loads(path.read_text())
        return Owned(int(record["pid"]), int(record["start_ticks"]), dict(record.get("info", {})))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def spawn(
    argv: list[str],
    *,
    pid_file: Path,
    log_file: Path,
    env: dict[str, str],
    cwd: Path,
    info: dict[str, str] | None = None,
) -> Owned:
    """Start `argv` in its own session with output appended to `log_file`, and record it."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        log.write(f"\n--- rtml started at {time.strftime('%Y-%m-%dT%H:%M:%S')}: {argv}\n".encode())
        log.flush()
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,  # its own process group: `down` stops its children too
        )
    ticks = start_ticks(process.pid)
    owned = Owned(process.pid, ticks if ticks is not None else -1, info or {})
    pid_file.write_text(
        json.dumps({"pid": owned.pid, "start_ticks": owned.start_ticks, "info": owned.info})
    )
    return owned


def terminate(owned: Owned, *, grace_s: float = 30.0) -> None:
    """Stop the process group we started: SIGTERM, then SIGKILL after `grace_s`."""
    if not is_alive(owned):
        ticks = start_ticks(owned.pid)
        # The leader is gone (or a zombie of ours): its group's leftovers are still ours, since
        # Linux does not hand out a pid that is still some group's id. A pid that now belongs to
        # another process (other start time) is not ours: no signal.
        if ticks is None or ticks == owned.start_ticks:
            _signal_group(owned.pid, signal.SIGKILL)
        return
    _signal_group(owned.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not is_alive(owned):
            break
        time.sleep(0.1)
    _signal_group(owned.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while is_alive(owned) and time.monotonic() < deadline:
        time.sleep(0.05)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(pgid, signum)


def group_members(pgid: int) -> list[int]:
    """Pids of live processes in process group `pgid` (to prove nothing was left behind)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text` (e.g. a stack's folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens on (or holds) `host:port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Servers set SO_REUSEADDR too, so connections in TIME_WAIT do not count as "in use".
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel considers free right now (for tests and ephemeral stacks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
