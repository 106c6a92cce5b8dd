"""The `rtml` command line: its help, its parser, and its one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rtml import cli


def test_help_lists_every_setting_with_its_environment_variable() -> None:
    text = cli.build_parser().format_help()
    for env in ("RTML_KAFKA_PORT", "RTML_FLINK_REST_PORT", "RTML_SMOKE_INPUT_TOPIC", "RTML_HOME"):
        assert env in text
    assert "default 9092" in text
    assert "RTML_ONLINE_STORE" in text and "RTML_OFFLINE_STATE" in text  # feature jobs'


def test_backtest_help_names_the_offline_state_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["backtest", "--help"])
    text = capsys.readouterr().out
    assert "RTML_OFFLINE_STATE" in text and "default heap" in text
    assert "RTML_SCORING_BATCH_SIZE" in text


@pytest.mark.parametrize("name", ["smoke", "fraud", "clickstream"])
def test_generate_knows_every_generator(name: str) -> None:
    args = cli.build_parser().parse_args(["generate", name, "--count", "5", "--seed", "3"])
    assert (args.name, args.count, args.seed) == (name, 5, 3)


def test_stopping_a_job_requires_a_savepoint_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["jobs", "stop", "abc"])
    assert exit_.value.code == 2
    assert "--savepoint" in capsys.readouterr().err


def test_submitting_an_unknown_job_is_a_one_line_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rtml.cli", "submit", "no_such_job"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("rtml: error: no job 'no_such_job'")
    assert "smoke" in result.stderr  # the jobs that do exist are named
    assert "Traceback" not in result.stderr
