"""Feature set definitions: a SQL query under sql/features/ and a YAML file of metadata beside it.

Users edit SQL and YAML, not Python. This module reads and checks the YAML and finds the SQL, and
checks the query's columns against the YAML once Flink has planned it (`feature_columns`); every
error names the file and line.

A query is either per event (a row per event, e.g. SLIDING_WINDOW_FEATURES) or a windowed GROUP BY
(TUMBLE, HOP, SESSION: a row per entity and window, written when the watermark passes the window's
end). Both name the same three columns: the entity, an event-time attribute (for a windowed GROUP
BY its `window_time`) and the event time of the Redis values in epoch ms (for a window its end, or
e.g. its last event). Every other column is a feature, in Redis and on the features topic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
# Flink type roots a Redis feature value can hold (int, float, str, bool; rtml.online_store).
_FEATURE_TYPES = {"BOOLEAN", "TINYINT", "SMALLINT", "INT", "INTEGER", "BIGINT", "FLOAT", "DOUBLE"}
_FEATURE_TYPES |= {"CHAR", "VARCHAR", "STRING"}
_EPOCH_MS_TYPES = {"BIGINT", "INT", "INTEGER"}
_TYPE_ROOT = re.compile(r"^\s*([A-Z_]+)")
_EPOCH_MS_SQL = "EXTRACT(EPOCH FROM t) * 1000 + EXTRACT(MILLISECOND FROM t)"  # exact, in UTC


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
    # line of each top-level key in the YAML file, for errors found later (e.g. a missing column)
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)


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

    def line(self, key: str | None = None) -> int:
        if key is not None:
            for key_node, value_node in self.node.value:
                if key_node.value == key:
                    return value_node.start_mark.line + 1
        return self.node.start_mark.line + 1

    def fail(self, key: str | None, message: str) -> FeatureSetError:
        return FeatureSetError(f"{self.path}:{self.line(key)}: {message}")

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
        lines={key: top.line(key) for key in data},
    )


def _type_root(flink_type: str) -> str:
    """'TIMESTAMP_LTZ(3) NOT NULL *ROWTIME*' -> 'TIMESTAMP_LTZ', 'ARRAY<BIGINT>' -> 'ARRAY'."""
    match = _TYPE_ROOT.match(flink_type.upper())
    return match.group(1) if match else flink_type


def _query_line(query: Path, column: str) -> int:
    """The first line of the query (outside comments) that names `column`, its SELECT; else 1."""
    pattern = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(column)}(?![A-Za-z0-9_])", re.I)
    for number, line in enumerate(query.read_text().splitlines(), start=1):
        if pattern.search(line.split("--", 1)[0]):
            return number
    return 1


def _type_hint(type_root: str) -> str:
    """How to turn a column Redis cannot store into one it can."""
    if type_root.startswith(("TIMESTAMP", "DATE", "TIME")):
        return f"select epoch ms instead ({_EPOCH_MS_SQL})"
    if type_root == "DECIMAL":
        return "CAST it to DOUBLE"
    return "select what it holds as columns of their own"


def feature_columns(
    definition: FeatureSetDefinition, columns: Sequence[tuple[str, str]]
) -> list[str]:
    """The query's feature columns (the Redis values), after checking its columns fit the YAML.

    `columns` are the planned query's (name, Flink type) pairs, e.g. ("window_time",
    "TIMESTAMP_LTZ(3) NOT NULL *ROWTIME*"). The entity, event-time and event-time-ms columns must
    exist with fitting types, and every other column must be a type Redis stores (numbers,
    strings, booleans): a job that would fail on its first row fails here, before it starts.
    """
    types = {name: _type_root(flink_type) for name, flink_type in columns}

    def fail(key: str, message: str) -> FeatureSetError:
        line = definition.lines.get(key, 1)
        return FeatureSetError(f"{definition.definition}:{line}: {key} {message}")

    for key in ("entity", "event_time", "event_time_ms"):
        column = getattr(definition, key)
        if column not in types:
            listing = ", ".join(name for name, _ in columns)
            raise fail(key, f"{column!r} is not a column of {definition.query.name} ({listing})")
    entity_type = types[definition.entity]
    if entity_type not in _FEATURE_TYPES - {"BOOLEAN", "FLOAT", "DOUBLE"}:
        raise fail("entity", f"{definition.entity!r} is {entity_type}, not a string or integer")
    time_type = types[definition.event_time]
    if not time_type.startswith("TIMESTAMP"):
        raise fail(
            "event_time",
            f"{definition.event_time!r} is {time_type}, not a TIMESTAMP "
            "(a windowed GROUP BY has window_time)",
        )
    ms_type = types[definition.event_time_ms]
    if ms_type not in _EPOCH_MS_TYPES:
        raise fail(
            "event_time_ms",
            f"{definition.event_time_ms!r} is {ms_type}, not epoch milliseconds (BIGINT); "
            f"of a window's end t: {_EPOCH_MS_SQL}",
        )
    keys = {definition.entity, definition.event_time, definition.event_time_ms}
    features = [name for name, _ in columns if name not in keys]
    for name in features:
        if types[name] not in _FEATURE_TYPES:
            raise FeatureSetError(
                f"{definition.query}:{_query_line(definition.query, name)}: column {name!r} is "
                f"{types[name]}: a feature is a number, string or boolean; "
                f"{_type_hint(types[name])}"
            )
    if not features:
        raise FeatureSetError(f"{definition.query}:1: the query has no feature columns")
    return features
