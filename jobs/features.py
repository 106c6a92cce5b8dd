"""Feature job: a feature set's SQL, kept fresh in Redis and published to Kafka.

    python -m jobs.features fraud_card          # embedded MiniCluster
    rtml submit features fraud_card --detached  # the local (or any) Flink session cluster

Kafka source topic -> classify (valid / dead letter with reason) -> the feature set's query
(sql/features/NAME.sql, windows in RocksDB state) -> Kafka features topic (exactly-once)
                                                 -> Redis online store (newest event wins;
                                                    the writer in a task of its own: OWN_TASK).
Definitions: sql/features/NAME.yaml and NAME.sql, the source in sql/sources/. The query is per
event (SLIDING_WINDOW_FEATURES: a row per event) or a windowed GROUP BY (TUMBLE, HOP, SESSION: a
row per entity and window, once the watermark passes its end); the job wires both the same way.
"""

from __future__ import annotations

import sys
import time

from pyflink.table import (
    DataTypes,
    Schema,
    StatementSet,
    StreamTableEnvironment,
    Table,
    TableDescriptor,
)
from pyflink.table.expressions import call, col

from rtml import featuresets, flinkjob, kafka_admin, offline, sqlfiles, statecheck
from rtml.featuresets import FeatureSetDefinition
from rtml.online_store import FeatureSet
from rtml.settings import FeatureJobSettings
from rtml.sqlfiles import SqlFileError
from udfs.online_store import write_online_features

TRANSACTION_TIMEOUT_MS = 15 * 60 * 1000  # within the broker's transaction.max.timeout.ms (1 h)


def source_params(definition: FeatureSetDefinition, settings: FeatureJobSettings) -> dict:
    """Values for the placeholders of the source SQL."""
    prefix = f"{settings.features_id_prefix}-{definition.name}"
    return {
        "bootstrap": settings.kafka_bootstrap,
        "topic": definition.source.topic,
        "group_id": prefix,
        "dead_letter_topic": definition.source.dead_letter_topic,
        "transactional_id_prefix": prefix,
        "transaction_timeout_ms": TRANSACTION_TIMEOUT_MS,
        "out_of_orderness_seconds": f"{definition.source.out_of_orderness_ms / 1000:.3f}",
        # Idle partitions hold the watermark back, so no event is ever late by idleness. Per-event
        # features do not wait for the watermark; windowed ones (TUMBLE, HOP, SESSION) are written
        # once it passes their end, i.e. once every partition has moved on.
        "idle_timeout": "0 s",
    }


def features_sink(
    t_env: StreamTableEnvironment, definition: FeatureSetDefinition, settings: FeatureJobSettings,
    schema: Schema,
) -> TableDescriptor:  # fmt: skip
    """Every feature row, as JSON keyed by entity, to the features topic, exactly-once."""
    prefix = f"{settings.features_id_prefix}-{definition.name}-features"
    return (
        TableDescriptor.for_connector("kafka")
        .schema(schema)
        .option("topic", definition.features_topic)
        .option("properties.bootstrap.servers", settings.kafka_bootstrap)
        .option("key.format", "raw")
        .option("key.fields", definition.entity)
        .option("value.format", "json")
        .option("value.json.timestamp-format.standard", "ISO-8601")
        .option("sink.delivery-guarantee", "exactly-once")
        .option("sink.transactional-id-prefix", prefix)
        .option("properties.transaction.timeout.ms", str(TRANSACTION_TIMEOUT_MS))
        .build()
    )


def query_columns(table: Table) -> list[tuple[str, str]]:
    """(name, Flink type) of each column of a planned query, e.g. ("n", "BIGINT NOT NULL")."""
    columns = []
    for column in table.get_resolved_schema().get_columns():
        name = column.get_name()
        # the summary is "`name` TYPE" (PyFlink's own DataType does not print the SQL type)
        quoted = "`" + name.replace("`", "``") + "` "
        columns.append((name, column.as_summary_string().removeprefix(quoted)))
    return columns


def topics(definition: FeatureSetDefinition) -> dict[str, int]:
    """The topics the job reads and writes, with their partition counts."""
    return {
        definition.source.topic: definition.source.partitions,
        definition.source.dead_letter_topic: 1,
        definition.features_topic: definition.source.partitions,
    }


def feature_query(t_env: StreamTableEnvironment, definition: FeatureSetDefinition) -> Table:
    """The feature set's query, planned; errors name its file and line."""
    (query,) = sqlfiles.render(definition.query.read_text(), {}, definition.query)
    try:
        return t_env.sql_query(query.text)
    except Exception as error:  # noqa: BLE001 - Py4J wraps the planner's errors; add the place
        message = flinkjob._first_line(error)
        raise SqlFileError(f"{definition.query}:{query.line}: {message}") from error


def guard_state(
    t_env: StreamTableEnvironment,
    definition: FeatureSetDefinition,
    features: Table,
    settings: FeatureJobSettings,
) -> None:
    """Record the job's state manifest; refuse a savepoint whose state no longer fits.

    Raises `statecheck.IncompatibleState` naming the feature set before Flink restores anything.
    """
    plan = statecheck.compiled_plan(t_env, features)
    current = statecheck.manifest(definition.name, definition.version, plan)
    t_env.get_config().set(
        "pipeline.global-job-parameters", f"{statecheck.JOB_PARAMETER}:{current.to_parameter()}"
    )
    if not settings.restore_from:
        return
    saved = statecheck.read_saved(settings.restore_from)
    if saved is None:
        print(
            f"warning: no {statecheck.MANIFEST_FILE} next to {settings.restore_from} (not taken "
            "by `rtml jobs stop --savepoint`?): cannot check that its state fits the feature set",
            file=sys.stderr,
        )
        return
    statecheck.check(
        saved, current, savepoint=settings.restore_from, definition_file=definition.query,
        layouts=statecheck.layout_changes(saved, current, plan),
    )  # fmt: skip


def build(
    t_env: StreamTableEnvironment,
    definition: FeatureSetDefinition,
    settings: FeatureJobSettings,
    *,
    backfill_from_ms: int | None = None,
) -> StatementSet:
    """The job's INSERTs: dead letters, every feature row to Kafka and (unless off) to Redis.

    `backfill_from_ms`: read the source topic again from that time (empty windows, rebuilt).
    """
    params = source_params(definition, settings)
    statements = [
        *sqlfiles.load("common/raw_source.sql", params),
        *(sqlfiles.load("common/backfill.sql", {"start_ms": backfill_from_ms})
          if backfill_from_ms is not None else []),
        *sqlfiles.render(definition.source.sql.read_text(), params, definition.source.sql),
        *sqlfiles.load("common/dead_letters.sql", params),
    ]  # fmt: skip
    statement_set = flinkjob.statement_set(t_env, statements)  # tables, views, dead letters
    features = feature_query(t_env, definition)
    values = featuresets.feature_columns(definition, query_columns(features))
    guard_state(t_env, definition, features, settings)

    resolved = features.get_schema()
    plain_schema = Schema.new_builder().from_row_data_type(resolved.to_row_data_type()).build()
    t_env.create_temporary_table(
        "features_out", features_sink(t_env, definition, settings, plain_schema)
    )
    statement_set.add_insert("features_out", features)
    if not settings.online_store:
        return statement_set

    t_env.create_temporary_table(
        "online_store_out",
        TableDescriptor.for_connector("blackhole")
        .schema(Schema.new_builder().column("written", DataTypes.BIGINT()).build())
        .build(),
    )
    featureset = FeatureSet(
        definition.name, version=definition.version, ttl_ms=definition.ttl_ms,
        entity_column=definition.entity, event_time_column=definition.event_time_ms,
    )  # fmt: skip
    t_env.create_temporary_function(
        "write_online_features", write_online_features(settings.redis_url, featureset, values)
    )
    # The writer waits for each Python bundle; in a task of its own it does so while the windows
    # go on computing, instead of stopping the thread they share (README "The writer's own task").
    t_env.create_temporary_view("features_for_online_store", features)
    writer_input = t_env.sql_query(
        "SELECT * FROM OWN_TASK(input => TABLE features_for_online_store "
        f"PARTITION BY `{definition.entity}`)"
    )
    online = writer_input.select(
        call(
            "write_online_features",
            col(definition.entity),
            col(definition.event_time_ms),
            *[col(name) for name in values],
        )
    )
    statement_set.add_insert("online_store_out", online)
    return statement_set


def main(argv: list[str]) -> None:
    if len(argv) not in (1, 2) or argv[1:] not in ([], ["--backfill"]):
        raise SystemExit("usage: python -m jobs.features FEATURESET [--backfill]")
    settings = FeatureJobSettings()
    definition = featuresets.load(argv[0], settings.features_dir)
    backfill_from_ms = None
    if "--backfill" in argv:  # as long as the longest window, so windows are full on catching up
        backfill_from_ms = int(time.time() * 1000) - offline.warm_up_for(definition)
    kafka_admin.ensure_topics(settings.kafka_bootstrap, topics(definition))
    t_env = flinkjob.table_environment(settings, f"rtml-features-{definition.name}")
    try:
        statement_set = build(t_env, definition, settings, backfill_from_ms=backfill_from_ms)
    except statecheck.IncompatibleState as refused:
        raise SystemExit(f"error: {refused}") from None
    flinkjob.execute(statement_set, detached=settings.detached)


if __name__ == "__main__":
    main(sys.argv[1:])
