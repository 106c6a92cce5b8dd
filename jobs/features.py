"""Feature job: a feature set's SQL, kept fresh in Redis and published to Kafka.

    python -m jobs.features fraud_card          # embedded MiniCluster
    rtml submit features fraud_card --detached  # the local (or any) Flink session cluster

Kafka source topic -> classify (valid / dead letter with reason) -> the feature set's query
(sql/features/NAME.sql, windows in RocksDB state) -> Kafka features topic (exactly-once)
                                                 -> Redis online store (newest event wins).
Definitions: sql/features/NAME.yaml and NAME.sql, the source in sql/sources/.
"""

from __future__ import annotations

import sys

from pyflink.table import DataTypes, Schema, StreamTableEnvironment, TableDescriptor
from pyflink.table.expressions import call, col

from rtml import featuresets, flinkjob, kafka_admin, sqlfiles
from rtml.featuresets import FeatureSetDefinition
from rtml.online_store import FeatureSet
from rtml.settings import FeatureJobSettings
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
        # Idle partitions hold the watermark back: features are per event, not per window, so
        # only the dead-lettering of late events waits for it.
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


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m jobs.features FEATURESET")
    settings = FeatureJobSettings()
    definition = featuresets.load(argv[0], settings.features_dir)
    kafka_admin.ensure_topics(
        settings.kafka_bootstrap,
        {
            definition.source.topic: definition.source.partitions,
            definition.source.dead_letter_topic: 1,
            definition.features_topic: definition.source.partitions,
        },
    )
    t_env = flinkjob.table_environment(settings, f"rtml-features-{definition.name}")
    params = source_params(definition, settings)
    statements = [
        *sqlfiles.load("common/raw_source.sql", params),
        *sqlfiles.render(definition.source.sql.read_text(), params, definition.source.sql),
        *sqlfiles.load("common/dead_letters.sql", params),
    ]
    statement_set = flinkjob.statement_set(t_env, statements)  # tables, views, dead letters
    (query,) = sqlfiles.render(definition.query.read_text(), {}, definition.query)
    features = t_env.sql_query(query.text)

    resolved = features.get_schema()
    plain_schema = Schema.new_builder().from_row_data_type(resolved.to_row_data_type()).build()
    t_env.create_temporary_table(
        "features_out", features_sink(t_env, definition, settings, plain_schema)
    )
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
    keys = {definition.entity, definition.event_time, definition.event_time_ms}
    values = [name for name in resolved.get_field_names() if name not in keys]
    t_env.create_temporary_function(
        "write_online_features", write_online_features(settings.redis_url, featureset, values)
    )
    online = features.select(
        call(
            "write_online_features",
            col(definition.entity),
            col(definition.event_time_ms),
            *[col(name) for name in values],
        )
    )

    statement_set.add_insert("features_out", features)
    if settings.online_store:
        statement_set.add_insert("online_store_out", online)
    flinkjob.execute(statement_set, detached=settings.detached)


if __name__ == "__main__":
    main(sys.argv[1:])
