from __future__ import annotations

from pathlib import Path

import pytest

from rtml import savepoints
from rtml.savepoints import SavepointError


@pytest.mark.parametrize(
    ("location", "folder"),
    [
        ("/sp/savepoint-1", Path("/sp/savepoint-1")),
        ("file:///sp/savepoint-1", Path("/sp/savepoint-1")),
        ("file:/sp/savepoint-1", Path("/sp/savepoint-1")),
        ("s3://bucket/sp/savepoint-1", None),
        ("hdfs://nn:8020/sp/savepoint-1", None),
    ],
)
def test_local_folder_of_paths_and_file_uris_only(location: str, folder: Path | None) -> None:
    assert savepoints.local_folder(location) == folder


@pytest.mark.parametrize(
    ("config", "claim"),
    [
        ({"state.changelog.enabled": "true"}, True),
        ({"state.changelog.enabled": "TRUE "}, True),
        ({"state.changelog.enabled": "false"}, False),
        ({}, False),  # Flink's default: no changelog
    ],
)
def test_a_changelog_cluster_needs_claim_mode(config: dict[str, str], claim: bool) -> None:
    assert savepoints.needs_claim(config) is claim


def _savepoint(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "_metadata").write_bytes(b"state")
    (folder / "rtml-state.json").write_text("{}\n")
    return folder


def test_a_local_savepoint_is_claimed_through_a_copy_and_stays(tmp_path: Path) -> None:
    original = _savepoint(tmp_path / "savepoint-ab12")
    claimed = savepoints.claimable(original.as_uri(), "s1")
    copy = tmp_path / "savepoint-ab12-claimed-s1"
    assert claimed == copy.as_uri()
    assert (copy / "_metadata").read_bytes() == b"state"
    assert (copy / "rtml-state.json").is_file()
    assert sorted(p.name for p in original.iterdir()) == ["_metadata", "rtml-state.json"]
    # a second restore of the same savepoint gets its own copy
    assert (
        savepoints.claimable(str(original), "s2")
        == (tmp_path / "savepoint-ab12-claimed-s2").as_uri()
    )


@pytest.mark.parametrize(
    "location", ["file:///ckpt/4f1e/chk-17", "/ckpt/4f1e/chk-17/", "s3://bucket/ckpt/4f1e/chk-3"]
)
def test_a_retained_checkpoint_is_claimed_as_it_is(location: str) -> None:
    # its files are shared with earlier checkpoints: a copy of its folder alone is not a checkpoint
    assert savepoints.claimable(location, "s1") == location


def test_a_savepoint_rtml_cannot_copy_is_refused_with_the_reason() -> None:
    with pytest.raises(SavepointError) as refused:
        savepoints.claimable("s3://bucket/sp/savepoint-1", "s1")
    message = str(refused.value)
    assert message.startswith("s3://bucket/sp/savepoint-1: the cluster runs the changelog state")
    assert "CLAIM mode" in message and "Copy it yourself and pass the copy." in message


def test_a_folder_without_metadata_is_no_savepoint(tmp_path: Path) -> None:
    with pytest.raises(SavepointError, match="no _metadata"):
        savepoints.claimable(str(tmp_path / "missing"), "s1")
    assert not (tmp_path / "missing-claimed-s1").exists()
