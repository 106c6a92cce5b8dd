"""Scoring job: every event's features, scored by a model, as predictions to Kafka.

    python -m jobs.scoring fraud            # embedded MiniCluster
    rtml submit scoring fraud --detached    # the local (or any) Flink session cluster

Kafka source topic -> classify (valid / dead letter with reason) -> the feature set's query
(RTML_SCORING_FEATURESET, default fraud_card; the same SQL files jobs/features.py runs) -> the
scoring UDF per Arrow batch (udfs/scoring.py: model server, then the local fallback model, then a
rule) -> predictions topic (sql/scoring/predictions.sql, keyed by entity; exactly-once, or
at-least-once with RTML_SCORING_DELIVERY=at-least-once: visible at once instead of at the next
checkpoint, duplicates possible after a restart).

The argument is the model's name on the V2 server. Its input features and threshold come from the
`metadata.json` of its newest version in the model repository (or RTML_SCORING_MODEL_VERSION);
the version that scores follows the log-compacted models topic (`rtml models promote`).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from pyflink.table import DataTypes, StatementSet, StreamTableEnvironment, Table
from pyflink.table.expressions import call, col
from pyflink.table.udf import UserDefinedScalarFunctionWrapper

from jobs.features import TRANSACTION_TIMEOUT_MS, feature_query, query_columns, source_params
from rtml import featuresets, flinkjob, kafka_admin, model_repo, sqlfiles
from rtml.featuresets import FeatureSetDefinition
from rtml.scoring import model_versions
from rtml.scoring.model_versions import FollowSettings
from rtml.settings import FeatureJobSettings, ScoringJobSettings, StackSettings
from udfs.scoring import python_worker_config, score_features

EVENT_ID = "event_id"  # the column every scored feature query must have


@dataclass(frozen=True)
class ModelSpec:
    """What the job needs to know about the model before it starts."""

    name: str
    version: str  # the version whose metadata gave the features
    feature_names: tuple[str, ...]  # its input columns, in order
    threshold: float | None  # from the metadata, if it has one


def _version_key(version: str) -> tuple[int, int | str]:
    # as MLServer picks "latest": integers by value, after any non-integer names
    return (1, int(version)) if version.isdigit() else (0, version)


def model_spec(repo: Path, model: str, version: str | None = None) -> ModelSpec:
    """The model's features and threshold from `repo/model/version/metadata.json` (newest version
    when `version` is None). Errors say which file is missing or wrong."""
    folder = repo / model
    if version is None:
        versions = [
            p.name for p in folder.glob("*") if (p / model_repo.METADATA_FILENAME).is_file()
        ]
        if not versions:
            raise FileNotFoundError(
                f"no version of model {model!r} in {folder} (publish one, e.g. rtml train fraud)"
            )
        version = max(versions, key=_version_key)
    try:
        metadata = model_repo.read_metadata(folder / version)
    except FileNotFoundError as missing:
        raise FileNotFoundError(f"model {model!r} version {version!r}: {missing}") from None
    return ModelSpec(model, version, metadata.feature_names, metadata.threshold)


def predictions_topic(settings: ScoringJobSettings, model: str) -> str:
    return settings.scoring_predictions_topic or f"rtml.predictions.{model}"


def dead_letter_topic(settings: ScoringJobSettings, model: str) -> str:
    # Not the feature job's: each job accounts for every record it reads, once.
    return settings.scoring_dead_letter_topic or f"rtml.scoring.{model}.dead-letter"


def topics(
    definition: FeatureSetDefinition, settings: ScoringJobSettings, model: str
) -> dict[str, int]:
    """The topics the job reads and writes, with their partition counts (the versions topic,
    compacted, is made by `model_versions.ensure_topic`)."""
    return {
        definition.source.topic: definition.source.partitions,
        dead_letter_topic(settings, model): 1,
        predictions_topic(settings, model): definition.source.partitions,
    }


def params(
    definition: FeatureSetDefinition, settings: ScoringJobSettings, model: str
) -> dict[str, object]:
    """Values for the placeholders of the source, dead-letter and predictions SQL."""
    prefix = f"{settings.scoring_id_prefix}-{model}"
    source = source_params(definition, FeatureJobSettings(kafka_bootstrap=settings.kafka_bootstrap))
    return {
        **source,
        "group_id": prefix,
        "transactional_id_prefix": prefix,
        "dead_letter_topic": dead_letter_topic(settings, model),
        "predictions_topic": predictions_topic(settings, model),
        "transaction_timeout_ms": TRANSACTION_TIMEOUT_MS,
        "delivery_guarantee": settings.scoring_delivery,
        "snapshot_prefix": f"{definition.name}/v{definition.version}/",
    }


def check_columns(features: Table, definition: FeatureSetDefinition, spec: ModelSpec) -> None:
    """The query has the event id and every model feature; else a clear error before submission."""
    have = {name for name, _ in query_columns(features)}
    missing = [name for name in (EVENT_ID, *spec.feature_names) if name not in have]
    if missing:
        raise ValueError(
            f"{definition.query}: model {spec.name}/{spec.version} needs columns {missing} that "
            f"the feature set {definition.name} does not have ({', '.join(sorted(have))})"
        )


def scorer_udf(settings: ScoringJobSettings, spec: ModelSpec) -> UserDefinedScalarFunctionWrapper:
    """The scoring UDF for this model: settings, threshold (explicit setting, else the metadata's;
    a promoted version's own unless explicit), fallback model and the versions topic to follow."""
    scoring = settings.scoring_settings(spec.feature_names)
    pinned = "scoring_threshold" in settings.model_fields_set
    if not pinned and spec.threshold is not None:
        scoring = dataclasses.replace(scoring, threshold=spec.threshold)
    follow = None
    if settings.scoring_follow_versions:
        follow = FollowSettings(settings.kafka_bootstrap, settings.scoring_models_topic)
    return score_features(
        scoring, settings.scoring_fallback_model, follow=follow, follow_threshold=not pinned
    )


def build(
    t_env: StreamTableEnvironment, definition: FeatureSetDefinition,
    settings: ScoringJobSettings, spec: ModelSpec,
) -> StatementSet:  # fmt: skip
    """The job's INSERTs: dead letters, and a prediction per valid event."""
    values = params(definition, settings, spec.name)
    statement_set = flinkjob.statement_set(
        t_env,
        [
            *sqlfiles.load("common/raw_source.sql", values),
            *sqlfiles.render(definition.source.sql.read_text(), values, definition.source.sql),
            *sqlfiles.load("common/dead_letters.sql", values),
        ],
    )
    features = feature_query(t_env, definition)
    check_columns(features, definition, spec)
    for key, value in python_worker_config(
        settings.scoring_batch_size, settings.scoring_linger_ms
    ).items():
        t_env.get_config().set(key, value)
    t_env.create_temporary_function("score_features", scorer_udf(settings, spec))
    scored = features.select(
        col(definition.entity).cast(DataTypes.STRING()).alias("entity"),
        col(EVENT_ID),
        col(definition.event_time).alias("event_time"),
        call("score_features", *[col(name) for name in spec.feature_names]).alias("prediction"),
    )
    t_env.create_temporary_view("scored", scored)
    flinkjob.statement_set(t_env, sqlfiles.load("scoring/predictions.sql", values))  # DDL only
    statement_set.add_insert("predictions", t_env.from_path("prediction_rows"))
    return statement_set


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m jobs.scoring MODEL")
    settings = ScoringJobSettings()
    repo = settings.scoring_model_repo or StackSettings().model_repo
    spec = model_spec(repo, argv[0], settings.scoring_model_version or None)
    settings = settings.model_copy(update={"scoring_model": spec.name})
    definition = featuresets.load(settings.scoring_featureset, FeatureJobSettings().features_dir)
    kafka_admin.ensure_topics(settings.kafka_bootstrap, topics(definition, settings, spec.name))
    model_versions.ensure_topic(settings.kafka_bootstrap, settings.scoring_models_topic)
    t_env = flinkjob.table_environment(
        settings, settings.scoring_job_name or f"rtml-scoring-{spec.name}"
    )
    flinkjob.execute(build(t_env, definition, settings, spec), detached=settings.detached)


if __name__ == "__main__":
    main(sys.argv[1:])
