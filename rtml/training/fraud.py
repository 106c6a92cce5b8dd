"""`rtml train fraud`: labelled events -> fraud_card features (offline, same SQL) -> two models.

1. Events: seeded generated transactions sent to a run-scoped topic (record timestamps = event
   time; the topic is deleted afterwards), or a range of an existing topic with labels from a
   labels topic.
2. Features: `rtml.offline.compute_features` runs fraud_card's source SQL and query on the
   embedded MiniCluster over that range.
3. Labels joined by event id; primary and fallback models trained and saved under OUT with their
   metadata (`rtml.training.models`); the primary is published as a new version to the model
   server's repository and loaded by the running server.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from rtml import featuresets, generate, model_repo, offline, v2client
from rtml.generators import fraud
from rtml.offline import KafkaRange
from rtml.settings import FeatureJobSettings, StackSettings
from rtml.training import models

FEATURESET = "fraud_card"
EVENT_ID = "event_id"
DEFAULT_RATE = 2.0  # events per second of event time: a 5000-event history spans ~40 min
DEFAULT_FRAUD_FRACTION = 0.03


@dataclass(frozen=True)
class TrainOptions:
    """What `rtml train fraud` was asked to do."""

    out: Path
    events: int = 5000
    seed: int = 0
    rate: float = DEFAULT_RATE
    fraud_fraction: float = DEFAULT_FRAUD_FRACTION
    topic: str | None = None  # None: generate into a run-scoped topic
    kafka_range: KafkaRange | None = None  # with topic; None: the whole topic
    labels_topic: str = fraud.LABELS_TOPIC  # with topic
    model_name: str = "fraud"
    publish: bool = True


def generated_records(events: Iterable[Mapping[str, object]]) -> Iterator[generate.Record]:
    """Transactions keyed by card, with the event time as the record's Kafka timestamp (time
    ranges and retention then follow event time)."""
    for event in events:
        yield generate.Record(
            fraud.key_of(event).encode(), json.dumps(event).encode(), None, int(str(event["ts"]))
        )


def load_on_server(base_url: str, name: str, version: str, *, timeout_s: float = 60.0) -> bool:
    """Ask a running MLServer to (re)load `name` from its repository (every version on disk) and
    wait until `version` is ready. False if no server answers (it loads the model at its next
    start)."""
    if not v2client.server_live(base_url):
        return False
    url = f"{base_url.rstrip('/')}/v2/repository/models/{name}/load"
    response = requests.post(url, timeout=timeout_s)
    if response.status_code >= 400:
        raise RuntimeError(
            f"model server could not load {name}: {v2client.error_message(response)}"
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if v2client.model_ready(base_url, name, version):
            return True
        time.sleep(0.5)
    raise RuntimeError(
        f"model {name} version {version} not ready on {base_url} after {timeout_s} s"
    )


def _generate(
    options: TrainOptions, settings: FeatureJobSettings, topic: str, partitions: int
) -> dict[str, int]:
    """Send the seeded events to `topic`; returns their labels by event id."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    span_ms = int(options.events * 1000 / options.rate)
    # The history ends a minute ago: Kafka refuses record timestamps far in the future.
    start_ms = int(time.time() * 1000) - span_ms - 60_000
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="rtml-train")
    try:
        # retention.ms=-1: however old the generated history, the broker keeps it while we read
        config = {"retention.ms": "-1"}
        admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=config)])
    finally:
        admin.close()

    def events() -> Iterator[dict[str, object]]:
        return fraud.iter_events(
            options.events, seed=options.seed, start_ms=start_ms, rate=options.rate,
            fraud_fraction=options.fraud_fraction,
        )  # fmt: skip

    generate.produce(settings.kafka_bootstrap, topic, generated_records(events()))
    return models.label_map(fraud.labels(events(), seed=options.seed))


def _delete_topic(bootstrap: str, topic: str) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="rtml-train")
    try:
        admin.delete_topics([topic])
    finally:
        admin.close()


def _read_labels(bootstrap: str, topic: str) -> dict[str, int]:
    from rtml.kafka_io import read_committed

    records = read_committed(bootstrap, topic, timeout_s=10.0)
    return models.label_map(json.loads(r.value) for r in records if r.value)


def train_fraud(
    options: TrainOptions,
    settings: FeatureJobSettings | None = None,
    stack: StackSettings | None = None,
    *,
    log: Any = print,
) -> dict[str, Any]:
    """Run the whole training; returns the summary also written to OUT/summary.json."""
    settings = settings or FeatureJobSettings()
    stack = stack or StackSettings()
    definition = featuresets.load(FEATURESET, settings.features_dir)
    run_id = uuid.uuid4().hex[:12]
    if options.topic is None:
        topic = f"rtml.train.fraud.{run_id}"
        labels = _generate(options, settings, topic, definition.source.partitions)
        log(f"generated {options.events} transactions (seed {options.seed}) into {topic}")
        kafka_range, source = KafkaRange.everything(), "generated"
    else:
        topic, kafka_range, source = options.topic, options.kafka_range, "topic"
        kafka_range = kafka_range or KafkaRange.everything()
        labels = _read_labels(settings.kafka_bootstrap, options.labels_topic)
        log(f"read {len(labels)} labels from {options.labels_topic}")
    try:
        computed = offline.compute_features(
            definition, kafka_range, settings, topic=topic, run_id=run_id
        )
    finally:
        if options.topic is None:
            _delete_topic(settings.kafka_bootstrap, topic)
    log(
        f"computed {len(computed.rows)} feature rows in {computed.elapsed_s:.1f} s "
        f"(dead letters: {computed.dead_letter_counts or 'none'})"
    )
    frame = models.join_labels(computed.rows, labels, id_column=EVENT_ID)
    keys = [definition.entity, EVENT_ID, definition.event_time]
    split, primary, fallback = models.train(
        frame, time_column=definition.event_time_ms, exclude=keys, seed=options.seed
    )
    version = models.next_version(stack.model_repo, options.model_name) if options.publish else "0"
    training = {
        "run_id": run_id,
        "featureset": {"name": definition.name, "version": definition.version},
        "source": source,
        "topic": topic,
        "events": options.events if source == "generated" else None,
        "seed": options.seed if source == "generated" else None,
        "fraud_fraction": options.fraud_fraction if source == "generated" else None,
        "range": computed.range.summary(),
        "rows": len(frame),
        "positives": int(frame[models.LABEL].sum()),
        "dead_letters": computed.dead_letter_counts,
        "split": {
            "rule": "by event time, 60% train / 20% validation (threshold) / 20% test",
            "validation_from_ms": split.boundaries_ms[0],
            "test_from_ms": split.boundaries_ms[1],
            "rows": [len(split.train), len(split.validation), len(split.test)],
        },
        "label_rule": "label 1 from the labels (chargebacks); no label or label 0: legitimate",
    }
    summary: dict[str, Any] = {"out": str(options.out), "training": training, "models": {}}
    for model in (primary, fallback):
        name = options.model_name if model.role == "primary" else f"{options.model_name}-fallback"
        meta = models.metadata(model, frame, name=name, version=version, training=training)
        folder = models.save(model, options.out / model.role, meta)
        summary["models"][model.role] = {
            "path": str(folder), "features": len(model.features), "threshold": model.threshold,
            "test": model.metrics["test"],
        }  # fmt: skip
        log(_metrics_line(model))
    if options.publish:
        published = model_repo.publish_sklearn_model(
            primary.model, stack.model_repo, options.model_name, version,
            feature_names=primary.features, threshold=primary.threshold,
        )  # fmt: skip
        loaded = load_on_server(stack.model_url, options.model_name, version)
        summary["published"] = {
            "name": options.model_name, "version": version, "path": str(published),
            "loaded": loaded,
        }  # fmt: skip
        where = "loaded by the model server" if loaded else "the model server loads it at start"
        log(f"published {options.model_name} version {version} to {published} ({where})")
    (options.out / "summary.json").write_text(json.dumps(models.jsonable(summary), indent=2) + "\n")
    return summary


def _metrics_line(model: models.TrainedModel) -> str:
    test = model.metrics["test"]

    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    return (
        f"{model.role:<8} {len(model.features):>2} features  threshold {model.threshold:.3f}  "
        f"test: ROC AUC {number(test['roc_auc'])}  PR AUC {number(test['pr_auc'])}  "
        f"precision {test['precision']:.3f}  recall {test['recall']:.3f}  "
        f"(tp {test['tp']} fp {test['fp']} fn {test['fn']} tn {test['tn']})"
    )
