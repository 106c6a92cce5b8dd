"""Reading Kafka the way a downstream consumer does (read_committed), and raw writes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord


def read_committed(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[ConsumerRecord]], bool] = lambda records: False,
    timeout_s: float,
    settle_s: float = 0.0,
) -> list[ConsumerRecord]:
    """Every committed record of `topic` from the start, read until `until(records)` holds.

    After `until` holds, keep reading for `settle_s` more so duplicates that would follow are seen.
    Returns what was read when the timeout passes (so a test's assertion shows what is missing);
    without `until`, that is everything committed so far.
    """
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout_s
    satisfied_at: float | None = None
    try:
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
            if satisfied_at is None and until(records):
                satisfied_at = time.monotonic()
            if satisfied_at is not None and time.monotonic() - satisfied_at >= settle_s:
                break
    finally:
        consumer.close()
    return records


def send_raw(
    bootstrap: str, topic: str, values: list[bytes | None], key: bytes | None = None
) -> None:
    """Send raw values (None is a tombstone) and wait until the broker has them all."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        futures = [producer.send(topic, key=key, value=value) for value in values]
        producer.flush()
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Each partition's end offset (read_uncommitted: every record written so far); {} if the
    topic does not exist."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def read_since(
    bootstrap: str,
    topic: str,
    since: Mapping[int, int],
    *,
    until: Callable[[list[dict]], bool],
    timeout_s: float,
) -> list[dict]:
    """Committed JSON records of `topic` from the `since` offsets on (partitions it does not name:
    from 0), read until `until(records)` holds or `timeout_s` passes."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False
    )
    records: list[dict] = []
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, since.get(tp.partition, 0))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not until(records):
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(json.loads(r.value) for r in batch if r.value is not None)
        return records
    finally:
        consumer.close()


def last_event_ms(bootstrap: str, topic: str) -> int | None:
    """The largest JSON `ts` among the last record of each partition (an earlier run's newest
    event); None for an empty topic. Records without a numeric `ts` are passed over."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        latest: int | None = None
        for partition in partitions:
            if ends[partition] == 0:
                continue
            consumer.seek(partition, ends[partition] - 1)
            for record in consumer.poll(timeout_ms=5000).get(partition, []):
                try:
                    ts = int(json.loads(record.value)["ts"])
                except (ValueError, KeyError, TypeError):
                    continue
                latest = ts if latest is None else max(latest, ts)
        return latest
    finally:
        consumer.close()
