"""Smoke job: count JSON events per key per tumbling window, exactly-once, with dead letters.

    python -m jobs.smoke                 # embedded MiniCluster
    rtml submit smoke --detached         # the local (or any) Flink session cluster

Kafka topic -> classify (valid / dead letter with reason) -> 10 s tumbling count per key in
RocksDB state -> Kafka topic (transactional).
SQL in sql/smoke/; settings in SmokeJobSettings (RTML_SMOKE_*).
"""

from __future__ import annotations

from rtml import flinkjob, kafka_admin, sqlfiles
from rtml.settings import SmokeJobSettings

JOB_NAME = "rtml-smoke"
SQL_FILES = (
    "common/raw_source.sql",
    "smoke/tables.sql",
    "smoke/pipeline.sql",
    "common/dead_letters.sql",
)


def sql_params(settings: SmokeJobSettings) -> dict[str, object]:
    """Values for the placeholders in sql/smoke/*.sql."""
    return {
        "bootstrap": settings.kafka_bootstrap,
        "topic": settings.smoke_input_topic,
        "output_topic": settings.smoke_output_topic,
        "dead_letter_topic": settings.smoke_dead_letter_topic,
        "group_id": settings.smoke_group_id,
        "transactional_id_prefix": settings.smoke_transactional_id_prefix,
        "transaction_timeout_ms": 15 * 60 * 1000,
        "window_seconds": settings.smoke_window_seconds,
        "out_of_orderness_seconds": settings.smoke_out_of_orderness_seconds,
        "idle_timeout": f"{settings.smoke_idle_timeout_seconds} s",
    }


def topics(settings: SmokeJobSettings) -> dict[str, int]:
    """The topics the job reads and writes, with their partition counts."""
    return {
        settings.smoke_input_topic: settings.smoke_partitions,
        settings.smoke_output_topic: settings.smoke_partitions,
        settings.smoke_dead_letter_topic: 1,
    }


def main() -> None:
    settings = SmokeJobSettings()
    kafka_admin.ensure_topics(settings.kafka_bootstrap, topics(settings))
    params = sql_params(settings)
    statements = [s for name in SQL_FILES for s in sqlfiles.load(name, params)]
    t_env = flinkjob.table_environment(settings, JOB_NAME)
    flinkjob.run_statements(t_env, statements, detached=settings.detached)


if __name__ == "__main__":
    main()
