from __future__ import annotations

from pathlib import Path

import pytest

from rtml import flinkconf, flinkjob
from rtml.settings import JobSettings, StackSettings


@pytest.fixture
def jars_dir(tmp_path: Path) -> Path:
    """The two jars a job names, as empty files: job_configuration only checks they exist."""
    flink = tmp_path / "jars" / "flink"
    flink.mkdir(parents=True)
    for name in (flinkjob.FLINK_KAFKA_CONNECTOR_JAR, flinkjob.UDFS_JAR):
        (flink / name).touch()
    return tmp_path / "jars"


def test_a_minicluster_job_keeps_its_checkpoints_and_state_log_in_its_own_folder(
    jars_dir: Path,
) -> None:
    conf = flinkjob.job_configuration(JobSettings(jars_dir=jars_dir), "rtml-x")
    local = StackSettings().home / "local" / "rtml-x"
    assert conf["execution.checkpointing.dir"] == (local / "checkpoints").as_uri()
    assert conf["execution.checkpointing.savepoint-dir"] == (local / "savepoints").as_uri()
    # The profile turns the changelog state backend on; without its folder the job would not start.
    assert conf["state.changelog.enabled"] == "true"
    assert conf[flinkconf.CHANGELOG_FOLDER_KEY] == (local / "changelog").as_uri()


def test_a_cluster_job_leaves_state_and_checkpoints_to_the_cluster(jars_dir: Path) -> None:
    conf = flinkjob.job_configuration(JobSettings(jars_dir=jars_dir, target="cluster"), "rtml-x")
    assert not any(key.startswith(("state.", "execution.checkpointing.")) for key in conf)
    assert conf["pipeline.name"] == "rtml-x"
