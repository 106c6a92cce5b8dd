"""jobs.features wiring that needs no services: placeholders, ids, topics, and every shipped
feature set planned by Flink (offline: nothing connects to Kafka or Redis)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobs.features import build, query_columns, source_params, topics
from rtml import featuresets, flinkjob
from rtml.featuresets import FeatureSetError
from rtml.settings import FeatureJobSettings
from rtml.sqlfiles import SQL_DIR, SqlFileError

PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
SHIPPED = sorted(path.stem for path in featuresets.FEATURES_DIR.glob("*.yaml"))


def test_the_clickstream_feature_sets_are_shipped() -> None:
    assert {"clickstream_session", "clickstream_category", "clickstream_item"} <= set(SHIPPED)
    assert {"clickstream_user", "fraud_card"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_source_params_fill_exactly_the_placeholders_of_the_source_sql(name: str) -> None:
    definition = featuresets.load(name)
    loaded = (
        SQL_DIR / "common" / "raw_source.sql",
        definition.source.sql,
        SQL_DIR / "common" / "dead_letters.sql",
    )
    code = "\n".join(
        line for path in loaded for line in path.read_text().splitlines()
        if not line.lstrip().startswith("--")
    )  # fmt: skip
    used = set(PLACEHOLDER.findall(code))
    assert used == set(source_params(definition, FeatureJobSettings()))
    assert not PLACEHOLDER.search(definition.query.read_text())  # the query takes no settings


def test_ids_and_intervals_come_from_the_definition_and_settings() -> None:
    definition = featuresets.load("fraud_card")
    settings = FeatureJobSettings(features_id_prefix="team-a", kafka_bootstrap="broker:9092")
    params = source_params(definition, settings)
    assert params["group_id"] == "team-a-fraud_card"
    assert params["transactional_id_prefix"] == "team-a-fraud_card"
    assert params["bootstrap"] == "broker:9092"
    assert params["out_of_orderness_seconds"] == "2.000"
    assert params["topic"] == definition.source.topic


def test_topics_with_their_partitions() -> None:
    definition = featuresets.load("clickstream_session")
    assert topics(definition) == {
        "rtml.clickstream.events": 2,
        "rtml.clickstream.dead-letter": 1,
        "rtml.features.clickstream_session": 2,
    }


# -- planned by Flink (a JVM, no services) -------------------------------------------------------

WANTED_FEATURES = {
    "clickstream_session": [
        "session_start_ms", "duration_ms", "events", "views", "carts", "purchases",
        "view_to_cart_ratio", "items", "categories",
    ],
    "clickstream_category": [
        "window_start_ms", "events", "views", "carts", "cart_rate", "users",
    ],
    "clickstream_item": ["window_start_ms", "views", "carts", "purchases", "users"],
    "clickstream_user": [
        "event_id", "action", "category", "item_id", "events_5m", "events_30m", "carts_30m",
        "categories_30m", "items_30m", "category_events_30m", "category_affinity_30m",
    ],
}  # fmt: skip
# The window each clickstream set is about, as the planner shows it: window TVF aggregates
# (append-only, a row per window when the watermark passes its end) or the per-event PTF.
WINDOW_IN_PLAN = {
    "clickstream_session": r"WindowAggregate\(groupBy=\[user_id\], window=\[SESSION\(.*30 min",
    "clickstream_category": r"WindowAggregate\(groupBy=\[category\], window=\[HOP\(.*"
    r"size=\[10 min\], slide=\[1 min\]",
    "clickstream_item": r"WindowAggregate\(groupBy=\[item_id\], window=\[TUMBLE\(.*size=\[1 min\]",
    "clickstream_user": r"ProcessTableFunction\(invocation=\[SLIDING_WINDOW_FEATURES\(",
}


@pytest.fixture(scope="module")
def settings() -> FeatureJobSettings:
    return FeatureJobSettings(kafka_bootstrap="127.0.0.1:1", redis_url="redis://127.0.0.1:1/0")


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_feature_set_plans_with_its_sinks(
    name: str, settings: FeatureJobSettings
) -> None:
    definition = featuresets.load(name)
    t_env = flinkjob.table_environment(settings, f"plan-{name}")
    plan = build(t_env, definition, settings).explain()
    assert "Sink(table=[default_catalog.default_database.features_out]" in plan
    assert "Sink(table=[default_catalog.default_database.online_store_out]" in plan
    assert "Sink(table=[default_catalog.default_database.dead_letters]" in plan
    # The Redis writer in a task of its own (a hash exchange before it), the query computed once.
    execution = plan.split("== Optimized Execution Plan ==")[1]
    writer = execution.split("Sink(table=[default_catalog.default_database.online_store_out]")[1]
    assert re.match(
        r"\s*\+- PythonCalc\(select=\[write_online_features\(.*\n"
        r"\s*\+- ProcessTableFunction\(invocation=\[OWN_TASK\(.*\n"
        rf"\s*\+- Exchange\(distribution=\[hash\[{definition.entity}\]\]\)",
        writer.split("\n", 1)[1],
    ), writer[:2000]
    assert "Reused(" in writer.split("\n\n")[0]
    columns = query_columns(t_env.from_path("features_out"))
    features = featuresets.feature_columns(definition, columns)
    if name in WANTED_FEATURES:
        assert features == WANTED_FEATURES[name]
        assert re.search(WINDOW_IN_PLAN[name], plan), name


def test_without_the_online_store_only_kafka_is_written(settings: FeatureJobSettings) -> None:
    offline = settings.model_copy(update={"online_store": False})
    t_env = flinkjob.table_environment(offline, "plan-offline")
    plan = build(t_env, featuresets.load("clickstream_item"), offline).explain()
    assert "features_out" in plan
    assert "online_store_out" not in plan


def test_a_query_error_names_the_query_file_and_line(
    tmp_path: Path, settings: FeatureJobSettings
) -> None:
    features_dir = tmp_path / "features"
    features_dir.mkdir()
    (tmp_path / "sources").mkdir()
    source = featuresets.load("clickstream_item").source.sql
    (tmp_path / "sources" / source.name).write_text(source.read_text())
    yaml_text = (featuresets.FEATURES_DIR / "clickstream_item.yaml").read_text()
    (features_dir / "clickstream_item.yaml").write_text(yaml_text)
    (features_dir / "clickstream_item.sql").write_text(
        "-- a typo\n\nSELECT item_id, event_time, nope\nFROM clickstream_events\n"
    )
    definition = featuresets.load("clickstream_item", features_dir)
    t_env = flinkjob.table_environment(settings, "plan-typo")
    with pytest.raises(SqlFileError, match=r"clickstream_item.sql:3: .*nope"):
        build(t_env, definition, settings)

    (features_dir / "clickstream_item.sql").write_text(
        "SELECT item_id, window_time, window_end,\n  COUNT(*) AS n\n"
        "FROM TABLE(TUMBLE(TABLE clickstream_events, DESCRIPTOR(event_time),\n"
        "  INTERVAL '1' MINUTE))\n"
        "GROUP BY item_id, window_start, window_end, window_time\n"
    )
    definition = featuresets.load("clickstream_item", features_dir)
    t_env = flinkjob.table_environment(settings, "plan-no-ms")
    with pytest.raises(FeatureSetError, match=r"clickstream_item.yaml:\d+: event_time_ms "):
        build(t_env, definition, settings)
