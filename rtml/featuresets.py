"""Feature set definitions: a SQL query under sql/features/ and a YAML file of metadata beside it.

Users edit SQL and YAML, not Python. This module reads and checks the YAML and finds the SQL; every
error names the file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rtml.sqlfiles import SQL_DIR

FEATURES_DIR = SQL_DIR / "features"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|sec|m|min|h|hour|hours|d|day|days)\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "sec": 1000, "m": 60_000, "min": 60_000}
_UNIT_MS |= {"h": 3_600_000, "hour": 3_600_000, "hours": 3_600_000}
_UNIT_MS |= {"d": 86_400_000, "day": 86_400_000, "days": 86_400_000}


class FeatureSetError(ValueError):
    """A feature set definition cannot be used; the message starts with `file:line:`."""


@dataclass(frozen=True)
class SourceDefinition:
    """Where a feature set's events come from and where bad ones go."""

    sql: Path
    topic: str
    partitions: int
    out_of_orderness_ms: int
    dead_letter_topic: str


@dataclass(frozen=True)
class FeatureSetDefinition:
    """One feature set: metadata from YAML, the query from SQL."""

    name: str
    version: int
    owner: str
    description: str
    entity: str  # the query's column that identifies the entity (the Redis key)
    event_time: str  # the query's event-time attribute (TIMESTAMP_LTZ, with a watermark)
    event_time_ms: str  # the same instant as epoch milliseconds (BIGINT), for the online store
    ttl_ms: int
    query: Path
    features_topic: str
    source: SourceDefinition
    definition: Path


def parse_duration(text: object) -> int:
    """'2 s', '5 min', '24 h', '7 d' -> milliseconds (positive)."""
    match = _DURATION.match(str(text))
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration like '30 s', '5 min', '24 h' or '7 d'")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


class _Reader:
    """Typed access to a YAML mapping that reports the file and line of what is wrong."""

    def __init__(self, path: Path, node: yaml.MappingNode, data: dict[str, Any]) -> None:
        self.path, self.node, self.data = path, node, data

    def _line(self, key: str | None = None) -> int:
        if key is not None:
            for key_node, value_node in self.node.value:
                if key_node.value == key:
                    return value_node.start_mark.line + 1
        return self.node.start_mark.line + 1

    def fail(self, key: str | None, message: str) -> FeatureSetError:
        return FeatureSetError(f"{self.path}:{self._line(key)}: {message}")

    def get(self, key: str, kind: type | tuple[type, ...], *, default: object = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise self.fail(None, f"missing key {key!r}")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (int in kinds and isinstance(value, bool)) or not isinstance(value, kinds):
            wanted = " or ".join(k.__name__ for k in kinds)
            raise self.fail(key, f"{key} must be {wanted}, not {type(value).__name__}")
        return value

    def name(self, key: str) -> str:
        value = self.get(key, str)
        if not _NAME.match(value):
            raise self.fail(key, f"{key} {value!r}: use letters, digits and _ (a SQL identifier)")
        return value

    def topic(self, key: str) -> str:
        value = self.get(key, str)
        if not _TOPIC.match(value):
            raise self.fail(key, f"{key} {value!r} is not a valid Kafka topic name")
        return value

    def duration(self, key: str) -> int:
        try:
            return parse_duration(self.get(key, (str, int)))
        except ValueError as error:
            raise self.fail(key, f"{key}: {error}") from None

    def file(self, key: str, base: Path) -> Path:
        path = (base / self.get(key, str)).resolve()
        if not path.is_file():
            raise self.fail(key, f"{key}: {path} does not exist")
        return path

    def section(self, key: str) -> _Reader:
        self.get(key, dict)
        for key_node, value_node in self.node.value:
            if key_node.value == key:
                return _Reader(self.path, value_node, self.data[key])
        raise self.fail(key, f"{key} must be a mapping")  # unreachable: get() checked it

    def unknown(self, known: set[str]) -> None:
        for key in self.data:
            if key not in known:
                raise self.fail(key, f"unknown key {key!r} (known: {', '.join(sorted(known))})")


def load(name: str, features_dir: Path = FEATURES_DIR) -> FeatureSetDefinition:
    """Read `features_dir/NAME.yaml` and check it (and that the files it names exist)."""
    path = features_dir / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in features_dir.glob("*.yaml"))
        raise FeatureSetError(f"{path}: no feature set {name!r} (defined: {', '.join(known)})")
    text = path.read_text()
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise FeatureSetError(f"{path}:{line}: not valid YAML: {error}") from None
    if not isinstance(node, yaml.MappingNode) or not isinstance(data, dict):
        raise FeatureSetError(f"{path}:1: a feature set is a mapping of keys")
    top = _Reader(path, node, data)
    top.unknown(
        {"name", "version", "owner", "description", "entity", "event_time", "event_time_ms",
         "ttl", "query", "features_topic", "source"}
    )  # fmt: skip
    if top.name("name") != name:
        raise top.fail("name", f"name {data['name']!r} must match the file name {name!r}")
    version = top.get("version", int)
    if version < 1:
        raise top.fail("version", "version must be 1 or more")
    source = top.section("source")
    source.unknown({"sql", "topic", "partitions", "out_of_orderness", "dead_letter_topic"})
    partitions = source.get("partitions", int, default=2)
    if partitions < 1:
        raise source.fail("partitions", "partitions must be 1 or more")
    return FeatureSetDefinition(
        name=name,
        version=version,
        owner=top.get("owner", str),
        description=top.get("description", str, default=""),
        entity=top.name("entity"),
        event_time=top.name("event_time"),
        event_time_ms=top.name("event_time_ms"),
        ttl_ms=top.duration("ttl"),
        query=top.file("query", path.parent),
        features_topic=top.topic("features_topic"),
        source=SourceDefinition(
            sql=source.file("sql", path.parent),
            topic=source.topic("topic"),
            partitions=partitions,
            out_of_orderness_ms=source.duration("out_of_orderness"),
            dead_letter_topic=source.topic("dead_letter_topic"),
        ),
        definition=path,
    )
