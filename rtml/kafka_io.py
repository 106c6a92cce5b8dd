"""Reading Kafka the way a downstream consumer does (read_committed), and raw writes."""

from __future__ import annotations

import time
from collections.abc import Callable

from kafka import KafkaConsumer, KafkaProducer
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
