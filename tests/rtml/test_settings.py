"""Unit tests of the typed settings and their RTML_* environment overrides."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from rtml.settings import (
    PROJECT_ROOT,
    BacktestSettings,
    FeatureJobSettings,
    JobSettings,
    SmokeJobSettings,
    StackSettings,
)


@pytest.fixture(autouse=True)
def _no_rtml_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RTML_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    stack = StackSettings()
    assert stack.home == PROJECT_ROOT / ".rtml"
    assert stack.runtime == (PROJECT_ROOT / ".rtml" / "stack").resolve()
    assert stack.flink_conf_dir == PROJECT_ROOT / "flink-conf"
    assert stack.python == Path(sys.executable)
    assert stack.kafka_bootstrap == "127.0.0.1:9092"
    assert stack.flink_rest_url == "http://127.0.0.1:8081"
    assert stack.model_url == "http://127.0.0.1:8080"
    assert stack.redis_url == "redis://127.0.0.1:6379/0"
    job = JobSettings()
    assert job.kafka_bootstrap == "127.0.0.1:9092"
    assert job.target == "local"
    assert job.detached is False
    assert job.jars_dir == stack.jars_dir


def test_kafka_port_from_env_moves_stack_and_job_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTML_KAFKA_PORT", "19092")
    assert StackSettings().kafka_port == 19092
    assert StackSettings().kafka_bootstrap == "127.0.0.1:19092"
    assert JobSettings().kafka_port == 19092
    assert JobSettings().kafka_bootstrap == "127.0.0.1:19092"
    assert SmokeJobSettings().kafka_bootstrap == "127.0.0.1:19092"


def test_explicit_bootstrap_wins_over_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTML_KAFKA_PORT", "19092")
    monkeypatch.setenv("RTML_KAFKA_BOOTSTRAP", "broker-1:9094,broker-2:9094")
    assert JobSettings().kafka_bootstrap == "broker-1:9094,broker-2:9094"
    assert SmokeJobSettings().kafka_bootstrap == "broker-1:9094,broker-2:9094"
    # the stack always runs its own broker on loopback
    assert StackSettings().kafka_bootstrap == "127.0.0.1:19092"


def test_constructor_arguments_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTML_KAFKA_PORT", "19092")
    assert StackSettings(kafka_port=29092).kafka_bootstrap == "127.0.0.1:29092"
    assert JobSettings(kafka_port=29092).kafka_bootstrap == "127.0.0.1:29092"
    assert JobSettings(kafka_bootstrap="h:1").kafka_bootstrap == "h:1"


def test_other_ports_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTML_FLINK_REST_PORT", "18081")
    monkeypatch.setenv("RTML_MODEL_HTTP_PORT", "18080")
    monkeypatch.setenv("RTML_REDIS_PORT", "16379")
    stack = StackSettings()
    assert stack.flink_rest_url == "http://127.0.0.1:18081"
    assert stack.model_url == "http://127.0.0.1:18080"
    assert stack.redis_url == "redis://127.0.0.1:16379/0"


def test_runtime_defaults_to_home_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RTML_HOME", str(tmp_path / "home"))
    stack = StackSettings()
    runtime = (tmp_path / "home" / "stack").resolve()
    assert stack.home == tmp_path / "home"
    assert stack.runtime == runtime
    assert stack.logs_dir == runtime / "logs"
    assert stack.pids_dir == runtime / "run"
    assert stack.checkpoints_uri == (runtime / "checkpoints").as_uri()
    assert stack.savepoints_uri == (runtime / "savepoints").as_uri()
    assert stack.jars_dir == tmp_path / "home" / "jars"
    assert stack.mlserver_venv == tmp_path / "home" / "venvs" / "mlserver"
    assert stack.model_repo == tmp_path / "home" / "models"


def test_runtime_dir_from_env_wins_and_is_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RTML_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RTML_RUNTIME_DIR", "relative/run")
    monkeypatch.chdir(tmp_path)
    stack = StackSettings()
    assert stack.runtime == (tmp_path / "relative" / "run").resolve()
    assert stack.runtime.is_absolute()
    assert stack.logs_dir == stack.runtime / "logs"
    assert stack.jars_dir == tmp_path / "home" / "jars"  # shared, not per stack


def test_job_flags_and_smoke_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTML_TARGET", "cluster")
    monkeypatch.setenv("RTML_DETACHED", "true")
    monkeypatch.setenv("RTML_PARALLELISM", "3")
    monkeypatch.setenv("RTML_SMOKE_WINDOW_SECONDS", "30")
    monkeypatch.setenv("RTML_SMOKE_INPUT_TOPIC", "in.topic")
    smoke = SmokeJobSettings()
    assert (smoke.target, smoke.detached, smoke.parallelism) == ("cluster", True, 3)
    assert smoke.smoke_window_seconds == 30
    assert smoke.smoke_input_topic == "in.topic"
    assert smoke.smoke_output_topic == "rtml.smoke.counts"


@pytest.mark.parametrize(
    ("cls", "name", "value", "field"),
    [
        (StackSettings, "RTML_KAFKA_PORT", "not-a-port", "kafka_port"),
        (JobSettings, "RTML_KAFKA_PORT", "not-a-port", "kafka_port"),
        (JobSettings, "RTML_TARGET", "remote", "target"),
        (SmokeJobSettings, "RTML_SMOKE_WINDOW_SECONDS", "ten", "smoke_window_seconds"),
    ],
)
def test_bad_env_value_is_a_validation_error_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, cls: type, name: str, value: str, field: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        cls()
    assert [error["loc"] for error in caught.value.errors()] == [(field,)]


def test_offline_state_from_env_reaches_backtests_and_is_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert FeatureJobSettings().offline_state == "heap"
    monkeypatch.setenv("RTML_OFFLINE_STATE", "rocksdb")
    assert BacktestSettings().feature_job_settings().offline_state == "rocksdb"
    monkeypatch.setenv("RTML_OFFLINE_STATE", "disk")
    with pytest.raises(ValidationError, match="offline_state"):
        FeatureJobSettings()


def test_unknown_rtml_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTML_NO_SUCH_SETTING", "x")
    assert StackSettings().kafka_port == 9092
    assert JobSettings().kafka_port == 9092


def test_settings_are_frozen() -> None:
    with pytest.raises(ValidationError):
        StackSettings().kafka_port = 1  # type: ignore[misc]
    with pytest.raises(ValidationError):
        JobSettings().kafka_bootstrap = "x:1"  # type: ignore[misc]
