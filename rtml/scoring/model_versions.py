"""Which version of each model is current: a small log-compacted Kafka topic, followed live.

Key = model name, value = JSON ``{"version": "2", "feature_names": [...], "threshold": 0.2}``
(the version's input columns and decision threshold from its metadata, when `rtml models promote`
found them); a tombstone (null value) withdraws the promotion, so the job goes back to its
configured version (empty: the server's latest). The topic is compacted, so it holds one record
per model however often versions change, and a job reading it from the beginning knows every
current version after a few records.

`promote()` writes a promotion (`rtml models promote fraud 2`). `VersionFollower` reads the topic
from the start in a daemon thread and keeps `CurrentVersions` up to date; the scoring UDF reads
that dict once per batch. A thread rather than a check every N batches: the batch path then never
waits on Kafka (a poll costs milliseconds to a fetch timeout), and a promotion takes effect within
the poll interval whether traffic is busy or quiet.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rtml.model_repo import check_feature_names, check_threshold

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "rtml.models.current"
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # as rtml.model_repo: a URL path segment


@dataclass(frozen=True)
class Promotion:
    """A promoted version, with what its metadata says it takes and decides by (None: unknown)."""

    version: str
    feature_names: tuple[str, ...] | None = None
    threshold: float | None = None


def encode_promotion(
    model: str,
    version: str,
    feature_names: Sequence[str] | None = None,
    threshold: float | None = None,
) -> tuple[bytes, bytes]:
    """(key, value) of the record that makes `version` current for `model` (pure)."""
    for kind, value in (("model", model), ("version", version)):
        if not _SEGMENT.match(value):
            raise ValueError(f"invalid {kind} {value!r}: use letters, digits, '.', '_', '-'")
    payload: dict[str, object] = {"version": version}
    if feature_names is not None:
        payload["feature_names"] = list(check_feature_names(list(feature_names), model))
    if threshold is not None:
        payload["threshold"] = check_threshold(threshold, model)
    return model.encode(), json.dumps(payload, separators=(",", ":")).encode()


def decode_record(key: bytes | None, value: bytes | None) -> tuple[str, Promotion | None]:
    """(model, promotion) of a record; None for a tombstone. ValueError when malformed."""
    if not key:
        raise ValueError("record without a key (the model name)")
    model = key.decode("utf-8", "replace")
    if value is None:
        return model, None
    try:
        payload = json.loads(value)
    except ValueError:
        raise ValueError(f"{model}: value is not JSON: {value[:80]!r}") from None
    version = payload.get("version") if isinstance(payload, dict) else None
    if not isinstance(version, str | int) or isinstance(version, bool):
        raise ValueError(f"{model}: value has no version: {value[:80]!r}")
    version = str(version)
    if not _SEGMENT.match(version):
        raise ValueError(f"{model}: invalid version {version!r}")
    names, threshold = payload.get("feature_names"), payload.get("threshold")
    return model, Promotion(
        version,
        None if names is None else check_feature_names(names, model),
        check_threshold(threshold, model),
    )


class CurrentVersions:
    """The promoted version per model, as the records of the topic say so far (thread-safe)."""

    def __init__(self) -> None:
        self._versions: dict[str, Promotion] = {}
        self._lock = threading.Lock()
        self.bad_records = 0

    def apply(self, key: bytes | None, value: bytes | None) -> str | None:
        """Take one record in topic order; returns why it was ignored, or None if applied.

        A malformed record is ignored (the previous version stays current): one bad write must
        not switch production to nothing.
        """
        try:
            model, promotion = decode_record(key, value)
        except ValueError as error:
            with self._lock:
                self.bad_records += 1
            return str(error)
        with self._lock:
            if promotion is None:
                self._versions.pop(model, None)
            else:
                self._versions[model] = promotion
        return None

    def get(self, model: str) -> str | None:
        """The promoted version of `model`, None if none is (or it was withdrawn)."""
        promotion = self.promotion(model)
        return None if promotion is None else promotion.version

    def promotion(self, model: str) -> Promotion | None:
        """The promotion of `model` (version, features, threshold), None if none."""
        with self._lock:
            return self._versions.get(model)


@dataclass(frozen=True)
class FollowSettings:
    """Where the current versions are (picklable: the UDF ships it to the workers)."""

    bootstrap: str
    topic: str = DEFAULT_TOPIC
    poll_ms: int = 200


class VersionFollower:
    """Reads the versions topic from the beginning, forever, in a daemon thread.

    `ready` is set once the records that were in the topic when it started have been read, so a
    job that waits for it scores its first batch with the promoted version. Kafka errors are
    logged and retried: the last known versions stay current meanwhile.
    """

    def __init__(
        self,
        settings: FollowSettings,
        versions: CurrentVersions | None = None,
        *,
        on_change: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self.settings = settings
        self.versions = versions or CurrentVersions()
        self.on_change = on_change
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> VersionFollower:
        self._thread = threading.Thread(target=self._run, name="rtml-model-versions", daemon=True)
        self._thread.start()
        return self

    def wait_ready(self, timeout_s: float) -> bool:
        return self.ready.wait(timeout_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception as error:  # noqa: BLE001 - keep the last versions, try again
                log.warning("following %s failed, retrying: %r", self.settings.topic, error)
                self._stop.wait(2.0)

    def _follow(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            bootstrap_servers=self.settings.bootstrap, group_id=None, enable_auto_commit=False,
            isolation_level="read_committed", auto_offset_reset="earliest",
            client_id="rtml-model-versions",
        )  # fmt: skip
        try:
            partitions = None
            while not partitions and not self._stop.is_set():
                partitions = consumer.partitions_for_topic(self.settings.topic)
                if not partitions:  # no topic (yet): nothing is promoted
                    self.ready.set()
                    self._stop.wait(2.0)
            if self._stop.is_set():
                return
            assigned = [TopicPartition(self.settings.topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            consumer.seek_to_beginning(*assigned)
            end = consumer.end_offsets(assigned)
            while not self._stop.is_set():
                for batch in consumer.poll(timeout_ms=self.settings.poll_ms).values():
                    for record in batch:
                        self._apply(record.key, record.value)
                if not self.ready.is_set() and all(
                    consumer.position(tp) >= end[tp] for tp in assigned
                ):
                    self.ready.set()
        finally:
            consumer.close()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        model = key.decode("utf-8", "replace") if key else "?"
        before = self.versions.get(model)
        problem = self.versions.apply(key, value)
        if problem is not None:
            log.warning("ignored a record of %s: %s", self.settings.topic, problem)
            return
        after = self.versions.get(model)
        if after != before:
            log.info("model %s: current version %s -> %s", model, before, after)
            if self.on_change is not None:
                self.on_change(model, after)


def ensure_topic(bootstrap: str, topic: str = DEFAULT_TOPIC) -> bool:
    """Create the versions topic, log-compacted with one partition, unless it exists."""
    import contextlib

    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="rtml-admin")
    try:
        if topic in set(admin.list_topics()):
            return False
        config = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(topic, 1, 1, topic_configs=config)])
        return True
    finally:
        admin.close()


def promote(
    bootstrap: str,
    model: str,
    version: str | None,
    topic: str = DEFAULT_TOPIC,
    *,
    feature_names: Sequence[str] | None = None,
    threshold: float | None = None,
) -> None:
    """Make `version` current for `model` (None: withdraw the promotion); returns once durable.

    `feature_names` and `threshold` (from the version's metadata) let scoring jobs refuse a
    version that takes other inputs than theirs and decide with the version's own threshold.
    """
    from kafka import KafkaProducer

    if version is None:
        key, value = model.encode(), None
    else:
        key, value = encode_promotion(model, version, feature_names, threshold)
    ensure_topic(bootstrap, topic)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        producer.send(topic, key=key, value=value).get(timeout=30)
    finally:
        producer.close()
