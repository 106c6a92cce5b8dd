"""`rtml backtest`: replay a Kafka range through the feature set's own SQL, score it with candidate
models and the production model through the live job's scorer, and compare with what happened.

1. **Check before reading anything**: the run id, that configured outputs (`--output-topic`,
   `--redis-prefix`) are run-scoped and not production's (`isolation.check_outputs`), the model
   folders and their metadata, and that the feature set has every feature each model reads.
2. **Features**: `rtml.offline.compute_features` over the range, with the warm-up (the longest
   window) read before it; only events inside the range are evaluated.
3. **Scores**: every model through `rtml.scoring.Scorer` (batches of RTML_SCORING_BATCH_SIZE,
   sub-batches, retries, breaker, fallback model, default rule), its primary served by a loopback
   V2 server of the run (`local_server`); `--no-timeouts` makes the deadline effectively infinite.
4. **Joins**: labels (the labels topic, to its end or a cut-off) and the production predictions
   recorded on the predictions topic, both read_committed, by event id.
5. **Parity**: each event's recomputed features against the live job's features topic record.
6. **Outputs** under `--out` only (frame.parquet, summary.json, report.html), plus the optional
   run-scoped topic and Redis prefix.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from rtml import featuresets
from rtml.backtest import isolation, joins, parity, topics
from rtml.backtest.model_folders import (
    ModelFolder,
    ModelFolderError,
    check_features,
    load_folder,
    unique_names,
)
from rtml.backtest.progress import Progress
from rtml.backtest.scoring import ModelPredictions, score_all, scoring_processes
from rtml.generators.fraud import LABELS_TOPIC
from rtml.offline import KafkaRange
from rtml.settings import BacktestSettings, StackSettings
from rtml.training.models import jsonable

EVENT_ID = "event_id"


class BacktestError(ValueError):
    """A backtest cannot run as asked; the message says why (exit code 2)."""


@dataclass(frozen=True)
class BacktestOptions:
    """What `rtml backtest MODEL ...` was asked to do."""

    model: str  # the model's name on the model server / in the repository (e.g. fraud)
    candidates: tuple[Path, ...]
    kafka_range: KafkaRange
    production: str | None = None  # a version of `model`, or a folder; None: the promoted one
    featureset: str | None = None  # None: RTML_SCORING_FEATURESET (fraud_card)
    labels_topic: str = LABELS_TOPIC
    labels_until_ms: int | None = None
    predictions_topic: str | None = None  # None: the live job's (rtml.predictions.<model>)
    out: Path | None = None  # None: RTML_BACKTEST_DIR/<run id>
    no_timeouts: bool = False
    run_id: str | None = None
    output_topic: str | None = None
    redis_prefix: str | None = None
    parity: bool = True


def predictions_topic(options: BacktestOptions, settings: BacktestSettings) -> str:
    return (
        options.predictions_topic
        or settings.scoring_predictions_topic
        or f"rtml.predictions.{options.model}"
    )


def all_featuresets(settings: BacktestSettings) -> list[featuresets.FeatureSetDefinition]:
    """Every feature set definition of the features folder (production's topics and keys)."""
    return [
        featuresets.load(path.stem, settings.features_dir)
        for path in sorted(settings.features_dir.glob("*.yaml"))
    ]


def check_isolation(
    options: BacktestOptions, settings: BacktestSettings, run_id: str
) -> list[featuresets.FeatureSetDefinition]:
    """IsolationError unless the configured outputs are run-scoped (reads nothing from Kafka)."""
    definitions = all_featuresets(settings)
    production = isolation.production_names(
        definitions,
        predictions_topics={
            predictions_topic(options, settings),
            f"rtml.predictions.{options.model}",
        },
        scoring_dead_letter_topics={
            settings.scoring_dead_letter_topic or f"rtml.scoring.{options.model}.dead-letter"
        },
        models_topic=settings.scoring_models_topic,
        labels_topic=options.labels_topic,
    )
    isolation.check_outputs(
        run_id, production, output_topic=options.output_topic, redis_prefix=options.redis_prefix
    )
    return definitions


def production_folder(
    options: BacktestOptions, settings: BacktestSettings, log: Callable[[str], None]
) -> ModelFolder | None:
    """The production model: `--production` (a folder, or a version of the model in the
    repository), else the version promoted on the models topic, else RTML_SCORING_MODEL_VERSION,
    else the repository's newest (as the live job picks it). None if the repository has none."""
    repo = settings.scoring_model_repo or StackSettings().model_repo
    fallback = settings.scoring_fallback_model
    given = options.production
    if given is not None and ("/" in given or Path(given).is_dir()):
        return load_folder(Path(given), "production", "production", fallback=fallback)
    version, source = given, "--production"
    if version is None:
        version, source = promoted_version(settings, options.model), settings.scoring_models_topic
    if version is None and settings.scoring_model_version:
        version, source = settings.scoring_model_version, "RTML_SCORING_MODEL_VERSION"
    if version is None:
        from jobs.scoring import model_spec

        try:
            version = model_spec(repo, options.model).version
        except FileNotFoundError:
            log(f"note: no version of model {options.model} in {repo}: scoring candidates only")
            return None
        source = f"the newest in {repo}"
    folder = repo / options.model / version
    if not folder.is_dir():
        raise ModelFolderError(
            f"production model {options.model} version {version} (from {source}) is not in the "
            f"model repository: {folder} does not exist"
        )
    log(f"production: {options.model} version {version} (from {source})")
    return load_folder(folder, "production", "production", fallback=fallback)


def promoted_version(settings: BacktestSettings, model: str) -> str | None:
    """The version promoted for `model` on the compacted models topic (None: none)."""
    from rtml.scoring.model_versions import CurrentVersions

    records = topics.read_to_end(
        settings.kafka_bootstrap, settings.scoring_models_topic,
        stall_timeout_s=settings.backtest_read_timeout_s,
    )  # fmt: skip
    current = CurrentVersions()
    for record in records or ():
        current.apply(record.key, record.value)  # a malformed record is ignored, as live
    return current.get(model)


def query_columns(
    definition: featuresets.FeatureSetDefinition, settings: BacktestSettings
) -> list[str]:
    """The feature query's columns, planned by Flink without running anything (so a model that
    reads a column the feature set lacks fails before the feature run, not after it)."""
    from jobs.features import feature_query, source_params
    from jobs.features import query_columns as planned_columns
    from rtml import flinkjob, sqlfiles
    from rtml.offline import offline_overrides, prefer_throughput_gc

    prefer_throughput_gc()  # the JVM this starts runs the feature run next
    feature_settings = settings.feature_job_settings()
    params = source_params(definition, feature_settings)
    t_env = flinkjob.table_environment(
        feature_settings,
        f"rtml-backtest-plan-{definition.name}",
        overrides=offline_overrides(feature_settings.offline_state),
    )
    flinkjob.statement_set(
        t_env,
        [
            *sqlfiles.load("common/raw_source.sql", params),
            *sqlfiles.render(definition.source.sql.read_text(), params, definition.source.sql),
        ],
    )
    return [name for name, _ in planned_columns(feature_query(t_env, definition))]


def _read_values(
    settings: BacktestSettings, topic: str, what: str, log: Callable[[str], None]
) -> list[bytes | None]:
    records = topics.read_to_end(
        settings.kafka_bootstrap, topic, stall_timeout_s=settings.backtest_read_timeout_s
    )
    if records is None:
        log(f"note: {what} topic {topic} does not exist")
        return []
    return [record.value for record in records]


def run_backtest(
    options: BacktestOptions,
    settings: BacktestSettings | None = None,
    *,
    log: Callable[[str], None] = print,
    progress_stream: TextIO | None = None,
) -> dict[str, Any]:
    """Run the backtest; returns the summary also written to OUT/summary.json."""
    from rtml.offline import KafkaOffsets, compute_features, resolve, warm_up_for

    started = time.monotonic()
    settings = settings or BacktestSettings()
    run_id = isolation.check_run_id(options.run_id or uuid.uuid4().hex[:12])
    # 1. Checks before anything is read.
    definitions = check_isolation(options, settings, run_id)
    name = options.featureset or settings.scoring_featureset
    by_name = {d.name: d for d in definitions}
    if name not in by_name:
        raise BacktestError(
            f"no feature set {name!r} in {settings.features_dir} (it has {sorted(by_name)})"
        )
    definition = by_name[name]
    out = options.out or settings.backtest_dir / run_id
    if out.exists() and any(out.iterdir()):
        raise BacktestError(f"--out {out} is not empty: a backtest writes a folder of its own")
    if not options.candidates:
        raise BacktestError("no --candidate given: name at least one model folder")
    names = unique_names(options.candidates, taken=("production",))
    models = [
        load_folder(path, "candidate", n) for path, n in zip(options.candidates, names, strict=True)
    ]
    production = production_folder(options, settings, log)
    if production is not None:
        models.append(production)

    # 2. The range, resolved against the broker: its errors come before any Flink work.
    warm_up_ms = warm_up_for(definition)
    broker = KafkaOffsets(settings.kafka_bootstrap, definition.source.topic)
    try:
        resolved = resolve(
            options.kafka_range, broker, topic=definition.source.topic, warm_up_ms=warm_up_ms,
            slack_ms=definition.source.out_of_orderness_ms,
        )  # fmt: skip
    finally:
        broker.close()
    log(
        f"backtest {run_id}: {definition.name} over {options.kafka_range.describe()} of "
        f"{definition.source.topic}: {resolved.offsets_read:,} records to read "
        f"({resolved.offsets_read - resolved.offsets_in_range:,} of them warm-up), "
        f"{len(models)} models"
    )
    for warning in resolved.warnings:
        log(f"warning: {warning}")
    # Planned (not run) before the feature run: a model reading a column the feature set lacks
    # fails here, in seconds.
    columns = query_columns(definition, settings)
    for model in models:
        check_features(model, columns, definition.name)
    # 3. Features over the range, warm-up first.
    feature_progress = Progress(
        "features", resolved.offsets_read, stream=progress_stream, unit="records"
    ).tick_while_blocked()
    try:
        computed = compute_features(
            definition, options.kafka_range, settings.feature_job_settings(),
            warm_up_ms=warm_up_ms, run_id=run_id, on_progress=feature_progress.update,
        )  # fmt: skip
    finally:
        feature_progress.finish()
    rows = computed.rows
    if rows.empty:
        raise BacktestError(
            f"empty range: no valid event of {definition.source.topic} in "
            f"{options.kafka_range.describe()} (dead letters: {computed.dead_letter_counts or 0})"
        )
    log(
        f"computed features of {len(rows):,} events in {computed.elapsed_s:.1f} s "
        f"(dead letters: {computed.dead_letter_counts or 'none'})"
    )

    # 4. Scores.
    scored = score_all(
        models, rows, settings, no_timeouts=options.no_timeouts, stream=progress_stream,
        processes=scoring_processes(settings.backtest_scoring_processes, len(models)),
    )  # fmt: skip

    # 5. Labels and what production recorded, by event id.
    event_ids = set(rows[EVENT_ID].astype(str))
    labels = joins.read_labels(
        _read_values(settings, options.labels_topic, "labels", log), options.labels_until_ms
    )
    recorded_topic = predictions_topic(options, settings)
    recorded = joins.read_predictions(
        _read_values(settings, recorded_topic, "predictions", log), event_ids
    )

    # 6. Training-serving parity with the live job's features topic.
    compared = [c for c in rows.columns if c not in (EVENT_ID, definition.event_time)]
    if options.parity:
        published, duplicates = parity.read_published(
            _read_values(settings, definition.features_topic, "features", log), event_ids, EVENT_ID
        )
        parity_summary = parity.compare(rows, published, id_column=EVENT_ID, columns=compared)
        parity_summary |= {"topic": definition.features_topic, "duplicates_on_topic": duplicates}
    else:
        parity_summary = {"status": "skipped", "note": "--no-parity"}

    frame = joins.build_frame(
        rows, id_column=EVENT_ID, entity_column=definition.entity,
        time_column=definition.event_time_ms, labels=labels.by_event, recorded=recorded.by_event,
        models=[
            joins.ModelScores(
                s.model.name, s.scores.tolist(), s.decisions.tolist(), s.paths,
            )
            for s in scored
        ],
    )  # fmt: skip

    # 7. Outputs: the folder, then the optional run-scoped topic and keys.
    out.mkdir(parents=True, exist_ok=True)
    frame_path = out / "frame.parquet"
    frame.to_parquet(frame_path, index=False)
    outputs: dict[str, Any] = {"frame": str(frame_path)}
    if options.output_topic:
        outputs["output_topic"] = {
            "topic": options.output_topic,
            "records": topics.write_predictions(
                settings.kafka_bootstrap, options.output_topic,
                _output_rows(frame, scored, rows, definition.entity),
                definition.source.partitions,
            ),
        }  # fmt: skip
    if options.redis_prefix:
        feature_rows = rows.drop(columns=[definition.event_time]).to_dict("records")
        outputs["redis"] = {
            "prefix": options.redis_prefix,
            "keys": topics.write_features(
                settings.redis_url, options.redis_prefix, feature_rows,
                entity=definition.entity, time_ms=definition.event_time_ms,
            ),
        }  # fmt: skip

    summary: dict[str, Any] = {
        "run_id": run_id,
        "model": options.model,
        "featureset": {"name": definition.name, "version": definition.version},
        "range": computed.range.summary(),
        "range_described": options.kafka_range.describe(),
        "events": len(frame),
        "dead_letters": computed.dead_letter_counts,
        "models": [
            {
                "name": s.model.name,
                "role": s.model.role,
                "version": s.model.version,
                "path": str(s.model.primary),
                "fallback": str(s.model.fallback or ""),
                "threshold": s.threshold,
                "scorer": s.metrics,
            }
            for s in scored
        ],  # fmt: skip
        "timeouts": not options.no_timeouts,
        "labels": {
            "topic": options.labels_topic,
            "records": labels.records,
            "until": options.labels_until_ms,
            "after_cutoff": labels.after_cutoff,
            "malformed": labels.malformed,
            "labelled_events": int(frame["label"].notna().sum()),
            "positives": int((frame["label"] == 1.0).sum()),
        },  # fmt: skip
        "recorded": {
            "topic": recorded_topic,
            "records": recorded.records,
            "events_with_prediction": int(frame["recorded_score"].notna().sum()),
            "duplicates": recorded.duplicates,
            "malformed": recorded.malformed,
        },  # fmt: skip
        "parity": parity_summary,
        "outputs": outputs,
    }
    summary |= _metrics_and_report(frame, scored, summary, out)
    summary["elapsed_s"] = round(time.monotonic() - started, 2)
    (out / "summary.json").write_text(json.dumps(jsonable(summary), indent=2) + "\n")
    log(f"wrote {out}/summary.json" + (", report.html" if summary.get("report") else ""))
    return summary


def _output_rows(
    frame: Any, scored: Sequence[ModelPredictions], rows: Any, entity: str
) -> list[dict[str, Any]]:
    """Candidate predictions as the live job writes them (plus the model's name)."""
    out = []
    entities = frame["entity"].tolist()
    for s in scored:
        if s.model.role != "candidate":
            continue
        for event_id, entity_id, ts, score, decision, version, path, error in zip(
            frame["event_id"], entities, frame["ts"], s.scores.tolist(), s.decisions.tolist(),
            s.model_versions, s.paths, s.errors, strict=True,
        ):  # fmt: skip
            out.append(
                {
                    "entity": entity_id, "event_id": event_id, "score": score,
                    "decision": decision, "model_version": version,
                    "path": path, "model": s.model.name, "event_ts": int(ts),
                    "error": error,
                }
            )  # fmt: skip
    return out


def _metrics_and_report(
    frame: Any, scored: Sequence[ModelPredictions], summary: dict[str, Any], out: Path
) -> dict[str, Any]:
    """Metrics (rtml.backtest.metrics) and report.html with its plots (rtml.backtest.report)."""
    from rtml.backtest.metrics import ScoredModel, summarize
    from rtml.backtest.report import write_report

    models = [
        ScoredModel(s.model.name, s.model.role, s.threshold, version=s.model.version)
        for s in scored
    ]
    metrics = summarize(frame, models)
    parity_summary = summary["parity"]
    run = {
        "run id": summary["run_id"],
        "feature set": f"{summary['featureset']['name']} v{summary['featureset']['version']}",
        "range": summary["range_described"],
        "events evaluated": summary["events"],
        "labels": f"{summary['labels']['topic']} (until {summary['labels']['until'] or 'now'})",
        "recorded predictions": summary["recorded"]["topic"],
        "timeouts": "live job's" if summary["timeouts"] else "none (--no-timeouts)",
        "parity": f"{parity_summary['status']}: {parity_summary.get('matching', 0)} of "
        f"{parity_summary.get('events', summary['events'])} events equal the features topic",
    }
    report = write_report(frame, models, {**metrics, "run": run}, out)
    return {"metrics": metrics, "report": str(report)}
