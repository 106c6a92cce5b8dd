"""Unit tests of the Flink configuration profile: flattening, loading, rendering (no cluster)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from rtml import flinkconf
from rtml.settings import PROJECT_ROOT, StackSettings


@pytest.fixture(autouse=True)
def _no_rtml_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RTML_"):
            monkeypatch.delenv(name)


def test_flatten_nested_scalars_bools_and_lists() -> None:
    tree = {
        "a": {"b": 1, "c": {"d": "x"}},
        "state.backend.type": "rocksdb",
        "on": True,
        "off": False,
        "ratio": 2.0,
        "jars": ["file:///a.jar", "file:///b.jar"],
        "empty": {},
    }
    assert flinkconf.flatten(tree) == {
        "a.b": "1",
        "a.c.d": "x",
        "state.backend.type": "rocksdb",
        "on": "true",
        "off": "false",
        "ratio": "2.0",
        "jars": "file:///a.jar;file:///b.jar",
    }


def test_flatten_values_are_all_strings() -> None:
    flat = flinkconf.flatten(yaml.safe_load("x:\n  y: 3\n  z: yes\nw: [1, 2]\n"))
    assert flat == {"x.y": "3", "x.z": "true", "w": "1;2"}
    assert all(isinstance(v, str) for v in flat.values())


def test_load_flattens_config_yaml(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "# comment\nexecution:\n  checkpointing:\n    interval: 5s\nparallelism.default: 2\n"
    )
    assert flinkconf.load(tmp_path) == {
        "execution.checkpointing.interval": "5s",
        "parallelism.default": "2",
    }


def test_load_empty_file_is_empty(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("# nothing yet\n")
    assert flinkconf.load(tmp_path) == {}


def test_load_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        flinkconf.load(tmp_path)
    assert str(caught.value) == f"Flink configuration not found: {tmp_path / 'config.yaml'}"


def test_load_bad_yaml_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("a: [1, 2\nb: 3\n")
    with pytest.raises(ValueError) as caught:
        flinkconf.load(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path / 'config.yaml'} is not valid YAML: ")


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("just text\n", "str")])
def test_load_non_mapping_names_the_path(tmp_path: Path, text: str, kind: str) -> None:
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(ValueError) as caught:
        flinkconf.load(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path / 'config.yaml'} must be a mapping of Flink keys, not {kind}"
    )


def test_job_level_keeps_only_job_keys() -> None:
    conf = {
        "state.backend.type": "rocksdb",
        "state.changelog.enabled": "true",
        "execution.checkpointing.interval": "5s",
        "restart-strategy.type": "fixed-delay",
        "parallelism.default": "1",
        "python.executable": "/venv/bin/python",
        "pipeline.name": "x",
        "table.local-time-zone": "UTC",
        "taskmanager.numberOfTaskSlots": "4",
        "jobmanager.memory.process.size": "1024m",
        "rest.port": "8081",
        "state.backend": "legacy-without-dot",
        "execution.runtime-mode": "streaming",
    }
    assert flinkconf.job_level(conf) == {
        "state.backend.type": "rocksdb",
        "state.changelog.enabled": "true",
        "execution.checkpointing.interval": "5s",
        "restart-strategy.type": "fixed-delay",
        "parallelism.default": "1",
        "python.executable": "/venv/bin/python",
        "pipeline.name": "x",
        "table.local-time-zone": "UTC",
    }


def _settings(tmp_path: Path, profile: Path) -> StackSettings:
    return StackSettings(
        home=tmp_path / "home",
        runtime_dir=tmp_path / "run",
        flink_conf_dir=profile,
        python=Path("/opt/venv/bin/python"),
        flink_rest_port=18081,
        flink_rpc_port=16123,
    )


def test_local_overrides_use_settings_ports_and_paths(tmp_path: Path) -> None:
    settings = _settings(tmp_path, tmp_path / "profile")
    run = (tmp_path / "run").resolve()
    assert flinkconf.local_overrides(settings) == {
        "jobmanager.rpc.address": "127.0.0.1",
        "jobmanager.rpc.port": "16123",
        "jobmanager.bind-host": "127.0.0.1",
        "taskmanager.bind-host": "127.0.0.1",
        "taskmanager.host": "127.0.0.1",
        "rest.address": "127.0.0.1",
        "rest.bind-address": "127.0.0.1",
        "rest.port": "18081",
        "execution.checkpointing.dir": (run / "checkpoints").as_uri(),
        "execution.checkpointing.savepoint-dir": (run / "savepoints").as_uri(),
        "state.changelog.dstl.dfs.base-path": (run / "changelog").as_uri(),
        "io.tmp.dirs": str(run / "flink-tmp"),
        "env.log.dir": str(run / "logs"),
        "env.pid.dir": str(run / "run" / "flink"),
        "python.executable": "/opt/venv/bin/python",
        "python.client.executable": "/opt/venv/bin/python",
    }
    assert settings.checkpoints_uri.startswith("file:///")


@pytest.fixture
def fake_pyflink_conf(tmp_path: Path) -> Path:
    conf = tmp_path / "pyflink-conf"
    conf.mkdir()
    (conf / "config.yaml").write_text(
        "blob:\n  server:\n    port: 6124\nrest:\n  port: 8081\nparallelism:\n  default: 7\n"
    )
    (conf / "log4j.properties").write_text("pyflink log4j\n")
    (conf / "log4j-console.properties").write_text("pyflink console\n")
    (conf / "logback.xml").write_text("<configuration/>\n")
    (conf / "subdir").mkdir()  # folders are not copied
    return conf


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    conf = tmp_path / "profile"
    conf.mkdir()
    (conf / "config.yaml").write_text(
        "state.backend.type: rocksdb\n"
        "execution:\n  checkpointing:\n    interval: 5s\n    dir: file:///profile/wins-not\n"
        "rest.port: 9999\n"
        "parallelism.default: 1\n"
    )
    (conf / "log4j-console.properties").write_text("profile console\n")
    (conf / "remote").mkdir()
    (conf / "remote" / "config.yaml").write_text("ignored: true\n")
    return conf


def _rendered(target: Path) -> dict[str, str]:
    text = (target / "config.yaml").read_text()
    assert text.startswith("# Rendered by rtml from flink-conf/config.yaml")
    return yaml.safe_load(text)


def test_render_merges_profile_and_overrides_and_copies_log_files(
    tmp_path: Path, fake_pyflink_conf: Path, profile: Path
) -> None:
    settings = _settings(tmp_path, profile)

    target = flinkconf.render(settings, fake_pyflink_conf)

    assert target == (tmp_path / "run").resolve() / "flink-conf"
    conf = _rendered(target)
    assert conf["state.backend.type"] == "rocksdb"  # profile
    assert conf["execution.checkpointing.interval"] == "5s"  # profile, nested
    assert conf["parallelism.default"] == "1"  # profile over Flink's default
    assert conf["rest.port"] == "18081"  # override over profile
    assert conf["execution.checkpointing.dir"] == settings.checkpoints_uri  # override
    assert conf["python.executable"] == "/opt/venv/bin/python"
    assert all(isinstance(v, str) for v in conf.values())
    expected = flinkconf.load(profile) | flinkconf.local_overrides(settings)
    assert {k: conf.get(k) for k in expected} == expected
    # Flink's log files come from PyFlink unless the profile has its own
    assert (target / "log4j.properties").read_text() == "pyflink log4j\n"
    assert (target / "log4j-console.properties").read_text() == "profile console\n"
    assert (target / "logback.xml").read_text() == "<configuration/>\n"
    assert sorted(p.name for p in target.iterdir()) == [
        "config.yaml",
        "log4j-console.properties",
        "log4j.properties",
        "logback.xml",
    ]


def test_render_twice_is_stable(tmp_path: Path, fake_pyflink_conf: Path, profile: Path) -> None:
    settings = _settings(tmp_path, profile)
    first = (flinkconf.render(settings, fake_pyflink_conf) / "config.yaml").read_text()
    second = (flinkconf.render(settings, fake_pyflink_conf) / "config.yaml").read_text()
    assert first == second


def test_render_without_profile_fails_with_its_path(
    tmp_path: Path, fake_pyflink_conf: Path
) -> None:
    missing = tmp_path / "no-profile"
    missing.mkdir()
    with pytest.raises(FileNotFoundError, match=str(missing / "config.yaml")):
        flinkconf.render(_settings(tmp_path, missing), fake_pyflink_conf)


def test_render_writes_exactly_the_profile_and_the_overrides(
    tmp_path: Path, fake_pyflink_conf: Path, profile: Path
) -> None:
    """PyFlink's sample config.yaml is not merged in: the profile is complete on its own."""
    settings = _settings(tmp_path, profile)
    conf = _rendered(flinkconf.render(settings, fake_pyflink_conf))
    assert "blob.server.port" not in conf  # only in the sample
    assert conf == flinkconf.load(profile) | flinkconf.local_overrides(settings)


# --- the checked-in profiles -------------------------------------------------------------------

LOCAL_PROFILE = PROJECT_ROOT / "flink-conf"


def test_checked_in_profile_is_the_settings_default() -> None:
    assert StackSettings().flink_conf_dir == LOCAL_PROFILE


def test_checked_in_profile_sets_state_checkpoints_and_restarts() -> None:
    conf = flinkconf.load(LOCAL_PROFILE)
    assert conf["state.backend.type"] == "rocksdb"
    assert conf["execution.checkpointing.incremental"] == "true"
    assert conf["execution.checkpointing.mode"] == "EXACTLY_ONCE"
    assert conf["execution.checkpointing.interval"]
    assert conf["restart-strategy.type"] in {"exponential-delay", "fixed-delay", "failure-rate"}
    prefix = f"restart-strategy.{conf['restart-strategy.type']}."
    assert any(key.startswith(prefix) for key in conf)
    opts = conf["env.java.opts.all"]
    assert "--add-opens=java.base/java.lang=ALL-UNNAMED" in opts
    assert "--add-opens=java.base/java.util=ALL-UNNAMED" in opts


def test_checked_in_profile_leaves_machine_keys_to_the_overrides() -> None:
    conf = flinkconf.load(LOCAL_PROFILE)
    machine = flinkconf.local_overrides(StackSettings())
    assert not conf.keys() & machine.keys()


def test_job_level_part_of_checked_in_profile() -> None:
    job = flinkconf.job_level(flinkconf.load(LOCAL_PROFILE))
    assert job["state.backend.type"] == "rocksdb"
    assert job["execution.checkpointing.mode"] == "EXACTLY_ONCE"
    assert job["state.changelog.enabled"] == "true"
    assert job["state.changelog.storage"] == "filesystem"
    assert "restart-strategy.type" in job
    assert "taskmanager.numberOfTaskSlots" not in job
    assert "env.java.opts.all" not in job


def test_remote_profile_loads_with_durable_checkpoints() -> None:
    conf = flinkconf.load(LOCAL_PROFILE / "remote")
    assert conf["state.backend.type"] == "rocksdb"
    assert conf["execution.checkpointing.mode"] == "EXACTLY_ONCE"
    assert not conf["execution.checkpointing.dir"].startswith("file:")


def test_with_overrides_copies_the_profile_and_changes_only_what_it_names(tmp_path: Path) -> None:
    target = flinkconf.with_overrides(tmp_path, {"execution.checkpointing.interval": "1s"})
    assert target == tmp_path / "flink-conf"
    profile = flinkconf.load(PROJECT_ROOT / "flink-conf")
    assert flinkconf.load(target) == profile | {"execution.checkpointing.interval": "1s"}
    # the other files of the profile (the remote one) come along
    assert (target / "remote" / "config.yaml").is_file()
    assert flinkconf.load(PROJECT_ROOT / "flink-conf") == profile  # the profile itself untouched


def test_parse_overrides_takes_key_value_pairs_and_refuses_the_rest() -> None:
    assert flinkconf.parse_overrides([" a.b = 1 ", "c=x=y"]) == {"a.b": "1", "c": "x=y"}
    assert flinkconf.parse_overrides([]) == {}
    with pytest.raises(ValueError, match="--conf takes KEY=VALUE, not 'a.b'"):
        flinkconf.parse_overrides(["a.b"])
