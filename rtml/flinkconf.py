"""Flink configuration: read the checked-in profile, add what depends on this machine, write it."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from rtml.settings import LOOPBACK, PROJECT_ROOT, StackSettings

# Keys that shape a job rather than a cluster process; jobs on the MiniCluster set them themselves.
JOB_LEVEL_PREFIXES = (
    "state.backend.",
    "state.changelog.",
    "execution.checkpointing.",
    "restart-strategy.",
    "parallelism.default",
    "python.",
    "pipeline.",
    "table.",
)

# The changelog state backend's log: a folder of this machine, like the checkpoints'.
CHANGELOG_FOLDER_KEY = "state.changelog.dstl.dfs.base-path"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested YAML (`a: {b: 1}`) into Flink's dotted keys (`a.b: "1"`)."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{dotted}."))
        elif isinstance(value, bool):
            flat[dotted] = "true" if value else "false"
        elif isinstance(value, list):
            flat[dotted] = ";".join(str(item) for item in value)
        else:
            flat[dotted] = str(value)
    return flat


def load(conf_dir: Path) -> dict[str, str]:
    """Read `conf_dir/config.yaml` as flat Flink keys; a clear error if missing or not YAML."""
    path = conf_dir / "config.yaml"
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"Flink configuration not found: {path}") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(tree, Mapping):
        raise ValueError(f"{path} must be a mapping of Flink keys, not {type(tree).__name__}")
    return flatten(tree)


def with_overrides(folder: Path, overrides: Mapping[str, str], profile: Path | None = None) -> Path:
    """A copy of `profile` (default: flink-conf/) in `folder`/flink-conf with `overrides` (flat
    keys) applied: the conf dir of a throw-away stack that differs from the profile (tests,
    benchmarks)."""
    target = folder / "flink-conf"
    shutil.copytree(profile or PROJECT_ROOT / "flink-conf", target)
    if overrides:
        conf = load(target) | {key.strip(): str(value).strip() for key, value in overrides.items()}
        (target / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=True, width=10_000))
    return target


def parse_overrides(items: list[str]) -> dict[str, str]:
    """`["KEY=VALUE", ...]` (a `--conf` option given several times) -> {KEY: VALUE}."""
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--conf takes KEY=VALUE, not {item!r}")
        parsed[key.strip()] = value.strip()
    return parsed


def job_level(conf: Mapping[str, str]) -> dict[str, str]:
    """The subset of a configuration a job sets on itself."""
    return {k: v for k, v in conf.items() if k.startswith(JOB_LEVEL_PREFIXES)}


def local_overrides(settings: StackSettings) -> dict[str, str]:
    """What the local stack adds to the checked-in profile: loopback, ports, folders, venv."""
    runtime = settings.runtime
    return {
        "jobmanager.rpc.address": LOOPBACK,
        "jobmanager.rpc.port": str(settings.flink_rpc_port),
        "jobmanager.bind-host": LOOPBACK,
        "taskmanager.bind-host": LOOPBACK,
        "taskmanager.host": LOOPBACK,
        "rest.address": LOOPBACK,
        "rest.bind-address": LOOPBACK,
        "rest.port": str(settings.flink_rest_port),
        "execution.checkpointing.dir": settings.checkpoints_uri,
        "execution.checkpointing.savepoint-dir": settings.savepoints_uri,
        CHANGELOG_FOLDER_KEY: settings.changelog_uri,
        "io.tmp.dirs": str(runtime / "flink-tmp"),
        "env.log.dir": str(settings.logs_dir),
        "env.pid.dir": str(settings.pids_dir / "flink"),
        "python.executable": str(settings.python),
        "python.client.executable": str(settings.python),
    }


def render(settings: StackSettings, pyflink_conf_dir: Path) -> Path:
    """Write the stack's Flink conf dir: `flink-conf/config.yaml` plus the local overrides.

    The profile is complete on its own (Flink's built-in defaults fill the rest), so PyFlink's
    sample config.yaml is not merged in; its log4j/logback files are copied unless `flink-conf/`
    has its own. Returns the folder to use as FLINK_CONF_DIR.
    """
    target = settings.runtime / "flink-conf"
    target.mkdir(parents=True, exist_ok=True)
    for source_dir in (pyflink_conf_dir, settings.flink_conf_dir):
        for source in source_dir.iterdir():
            if source.is_file() and source.name != "config.yaml":
                shutil.copyfile(source, target / source.name)
    conf = load(settings.flink_conf_dir) | local_overrides(settings)
    (target / "config.yaml").write_text(
        "# Rendered by rtml from flink-conf/config.yaml; edit that file, not this one.\n"
        + yaml.safe_dump(conf, sort_keys=True, width=10_000)
    )
    return target
