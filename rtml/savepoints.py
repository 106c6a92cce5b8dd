"""What a job restores from when the cluster runs the changelog state backend.

Flink restores a savepoint in one of two modes. NO_CLAIM (its default) leaves the savepoint to
the user and makes the job's first checkpoint a full one, so that nothing refers back to it; the
changelog state backend cannot take such a checkpoint, and the job fails on its first one
("does not support enforcing a full snapshot"). CLAIM hands the savepoint to the job, which
deletes it once a newer checkpoint replaces it. A user who resumes after an edit expects the
savepoint to stay, to go back to it if the edit was wrong; so rtml restores a savepoint in CLAIM
mode from a copy of it, and leaves the user's folder as it was. A retained checkpoint (`chk-N`, the
last state of a cancelled job) is restored as it is: it already belongs to the job's lineage, and
its files are shared with the checkpoints before it, so a copy of its folder alone is incomplete.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path

CHANGELOG_KEY = "state.changelog.enabled"
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_RETAINED_CHECKPOINT = re.compile(r"^chk-\d+$")


class SavepointError(ValueError):
    """A savepoint rtml cannot restore as asked; the message says why and what to do."""


def local_folder(location: str) -> Path | None:
    """The folder of a savepoint given as a path or a file: URI; None for other file systems."""
    if _SCHEME.match(location) and not location.lower().startswith("file:"):
        return None
    return Path(re.sub(r"^file:(//)?", "", location, flags=re.IGNORECASE))


def needs_claim(cluster_config: Mapping[str, str]) -> bool:
    """Whether the cluster's jobs run the changelog state backend (and so restore only in CLAIM)."""
    return cluster_config.get(CHANGELOG_KEY, "false").strip().lower() == "true"


def is_retained_checkpoint(location: str) -> bool:
    return bool(_RETAINED_CHECKPOINT.match(location.rstrip("/").rsplit("/", 1)[-1]))


def claimable(location: str, suffix: str) -> str:
    """What to restore from in CLAIM mode: a retained checkpoint as it is, a savepoint's copy
    (made next to it, named `<savepoint>-claimed-<suffix>`).

    A savepoint on another file system than the local one is refused: rtml cannot copy it, and
    CLAIM mode would delete it.
    """
    if is_retained_checkpoint(location):
        return location
    folder = local_folder(location)
    if folder is None:
        raise SavepointError(
            f"{location}: the cluster runs the changelog state backend, which restores a savepoint "
            "only in CLAIM mode, where the job deletes it once a newer checkpoint replaces it; "
            "rtml copies local savepoints first but cannot copy this one. Copy it yourself and "
            "pass the copy."
        )
    if not (folder / "_metadata").is_file():
        raise SavepointError(
            f"{location}: no savepoint at {folder} (no _metadata): rtml copies a savepoint before "
            "a CLAIM restore, so it must be readable from this machine"
        )
    copy = folder.with_name(f"{folder.name}-claimed-{suffix}")
    shutil.copytree(folder, copy)
    return copy.as_uri()
