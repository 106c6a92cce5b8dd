"""Feature set definitions: the shipped ones load, and every mistake names its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rtml import featuresets
from rtml.featuresets import FeatureSetError, parse_duration

GOOD = {
    "name": "cards",
    "version": 2,
    "owner": "risk",
    "entity": "card_id",
    "event_time": "event_time",
    "event_time_ms": "ts",
    "ttl": "2 d",
    "query": "cards.sql",
    "features_topic": "rtml.features.cards",
    "source": {
        "sql": "source.sql",
        "topic": "rtml.cards",
        "partitions": 3,
        "out_of_orderness": "2 s",
        "dead_letter_topic": "rtml.cards.dead-letter",
    },
}


def write(tmp_path: Path, definition: dict | str, name: str = "cards") -> Path:
    (tmp_path / "cards.sql").write_text("SELECT 1")
    (tmp_path / "source.sql").write_text("SELECT 1")
    text = (
        definition if isinstance(definition, str) else yaml.safe_dump(definition, sort_keys=False)
    )
    (tmp_path / f"{name}.yaml").write_text(text)
    return tmp_path


def test_the_shipped_fraud_card_definition_loads() -> None:
    fraud = featuresets.load("fraud_card")
    assert (fraud.entity, fraud.event_time, fraud.event_time_ms) == ("card_id", "event_time", "ts")
    assert fraud.query.read_text().lstrip().startswith("--")
    assert fraud.source.sql.name == "fraud_transactions.sql"
    assert fraud.ttl_ms == 2 * 86_400_000
    assert fraud.source.out_of_orderness_ms == 2_000


def test_a_good_definition_loads_with_paths_relative_to_it(tmp_path: Path) -> None:
    definition = featuresets.load("cards", write(tmp_path, GOOD))
    assert definition.version == 2
    assert definition.query == (tmp_path / "cards.sql").resolve()
    assert definition.source.partitions == 3
    assert definition.source.dead_letter_topic == "rtml.cards.dead-letter"


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        ({"version": "two"}, 2, "version must be int, not str"),
        ({"version": True}, 2, "version must be int, not bool"),
        ({"version": 0}, 2, "version must be 1 or more"),
        ({"ttl": "forever"}, 7, "ttl: 'forever' is not a duration"),
        ({"entity": "card id"}, 4, "entity 'card id': use letters, digits and _"),
        ({"query": "missing.sql"}, 8, "does not exist"),
        ({"features_topic": "bad topic!"}, 9, "not a valid Kafka topic name"),
        ({"colour": "red"}, 16, "unknown key 'colour'"),
        ({"name": "other"}, 1, "must match the file name 'cards'"),
    ],
)
def test_mistakes_name_the_file_and_line(
    tmp_path: Path, change: dict, line: int, message: str
) -> None:
    write(tmp_path, {**GOOD, **change})
    with pytest.raises(FeatureSetError) as failure:
        featuresets.load("cards", tmp_path)
    assert str(failure.value).startswith(f"{tmp_path / 'cards.yaml'}:{line}: ")
    assert message in str(failure.value)


def test_mistakes_inside_the_source_section(tmp_path: Path) -> None:
    source = {**GOOD["source"], "partitions": 0}
    write(tmp_path, {**GOOD, "source": source})
    with pytest.raises(FeatureSetError, match=r"cards.yaml:13: partitions must be 1 or more"):
        featuresets.load("cards", tmp_path)


def test_a_missing_key_and_bad_yaml_are_reported(tmp_path: Path) -> None:
    write(tmp_path, {k: v for k, v in GOOD.items() if k != "owner"})
    with pytest.raises(FeatureSetError, match=r"cards.yaml:1: missing key 'owner'"):
        featuresets.load("cards", tmp_path)
    write(tmp_path, "name: cards\nversion: [1,\n")
    with pytest.raises(FeatureSetError, match=r"cards.yaml:\d+: not valid YAML"):
        featuresets.load("cards", tmp_path)


def test_an_unknown_feature_set_lists_the_defined_ones(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    with pytest.raises(FeatureSetError, match=r"no feature set 'nope' \(defined: cards\)"):
        featuresets.load("nope", tmp_path)


@pytest.mark.parametrize(
    ("text", "ms"), [("500 ms", 500), ("2 s", 2000), ("5 min", 300_000), ("24 h", 86_400_000)]
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["0 s", "5", "5 weeks", "-1 s", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


# -- the query's columns against the YAML (feature_columns) --------------------------------------

SESSION_COLUMNS = [
    ("user_id", "STRING"),
    ("window_time", "TIMESTAMP_LTZ(3) NOT NULL *ROWTIME*"),
    ("session_start_ms", "BIGINT"),
    ("session_last_ms", "BIGINT"),
    ("events", "BIGINT NOT NULL"),
    ("view_to_cart_ratio", "DOUBLE"),
    ("bot", "BOOLEAN"),
]
WINDOWED = {**GOOD, "entity": "user_id", "event_time": "window_time"}
WINDOWED["event_time_ms"] = "session_last_ms"


@pytest.mark.parametrize(
    "name", ["clickstream_session", "clickstream_category", "clickstream_item", "clickstream_user"]
)
def test_the_shipped_clickstream_definitions_load(name: str) -> None:
    definition = featuresets.load(name)
    assert definition.source.sql.name == "clickstream_events.sql"
    assert definition.source.topic == "rtml.clickstream.events"
    assert definition.features_topic == f"rtml.features.{name}"
    assert definition.query.name == f"{name}.sql"


def test_feature_columns_of_a_windowed_group_by(tmp_path: Path) -> None:
    definition = featuresets.load("cards", write(tmp_path, WINDOWED))
    features = featuresets.feature_columns(definition, SESSION_COLUMNS)
    # every column but the entity, the time attribute and the Redis event time, in query order
    assert features == ["session_start_ms", "events", "view_to_cart_ratio", "bot"]


def test_feature_columns_of_a_per_event_query(tmp_path: Path) -> None:
    definition = featuresets.load("cards", write(tmp_path, GOOD))
    columns = [
        ("card_id", "STRING"),
        ("event_time", "TIMESTAMP_LTZ(3)"),
        ("ts", "BIGINT"),
        ("tx_count_1m", "BIGINT"),
        ("amount", "DOUBLE"),
    ]
    assert featuresets.feature_columns(definition, columns) == ["tx_count_1m", "amount"]


@pytest.mark.parametrize(
    ("columns", "line", "message"),
    [
        (
            [c for c in SESSION_COLUMNS if c[0] != "user_id"],
            4,
            "entity 'user_id' is not a column of cards.sql (window_time, session_start_ms",
        ),
        (
            [c for c in SESSION_COLUMNS if c[0] != "window_time"],
            5,
            "event_time 'window_time' is not a column of cards.sql",
        ),
        (
            [("user_id", "DOUBLE"), *SESSION_COLUMNS[1:]],
            4,
            "entity 'user_id' is DOUBLE, not a string or integer",
        ),
        (
            [SESSION_COLUMNS[0], ("window_time", "BIGINT"), *SESSION_COLUMNS[2:]],
            5,
            "event_time 'window_time' is BIGINT, not a TIMESTAMP",
        ),
        (
            [*SESSION_COLUMNS[:3], ("session_last_ms", "TIMESTAMP(3) NOT NULL")],
            6,
            "event_time_ms 'session_last_ms' is TIMESTAMP, not epoch milliseconds (BIGINT); of a "
            "window's end t: EXTRACT(EPOCH FROM t) * 1000 + EXTRACT(MILLISECOND FROM t)",
        ),
    ],
)
def test_key_columns_that_do_not_fit_name_the_yaml_line(
    tmp_path: Path, columns: list, line: int, message: str
) -> None:
    definition = featuresets.load("cards", write(tmp_path, WINDOWED))
    with pytest.raises(FeatureSetError) as failure:
        featuresets.feature_columns(definition, columns)
    assert str(failure.value).startswith(f"{tmp_path / 'cards.yaml'}:{line}: {message}")


@pytest.mark.parametrize(
    ("flink_type", "message"),
    [
        ("TIMESTAMP(3) NOT NULL", "is TIMESTAMP: a feature is a number, string or boolean; "
         "select epoch ms instead (EXTRACT(EPOCH FROM t) * 1000 + EXTRACT(MILLISECOND FROM t))"),
        ("DECIMAL(10, 2)", "is DECIMAL: a feature is a number, string or boolean; CAST it to"),
        ("ARRAY<BIGINT>", "is ARRAY: a feature is a number, string or boolean; select what it"),
    ],
)  # fmt: skip
def test_a_feature_redis_cannot_store_names_the_query_line(
    tmp_path: Path, flink_type: str, message: str
) -> None:
    definition = featuresets.load("cards", write(tmp_path, WINDOWED))
    (tmp_path / "cards.sql").write_text(
        "-- window_start in a comment is not its line\nSELECT user_id,\n  window_start,\n  1\n"
    )
    with pytest.raises(FeatureSetError) as failure:
        featuresets.feature_columns(definition, [*SESSION_COLUMNS, ("window_start", flink_type)])
    assert str(failure.value).startswith(f"{tmp_path / 'cards.sql'}:3: column 'window_start' ")
    assert message in str(failure.value)


def test_a_query_of_only_key_columns_has_no_features(tmp_path: Path) -> None:
    definition = featuresets.load("cards", write(tmp_path, WINDOWED))
    with pytest.raises(FeatureSetError, match=r"cards.sql:1: the query has no feature columns"):
        featuresets.feature_columns(definition, [SESSION_COLUMNS[i] for i in (0, 1, 3)])
