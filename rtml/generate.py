"""Seeded synthetic event generators and the Kafka producer that sends their records."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from kafka import KafkaProducer


@dataclass(frozen=True)
class Record:
    """One Kafka record to send: key and value as bytes."""

    key: bytes | None
    value: bytes
    partition: int | None = None  # None: the producer's partitioner picks by key
    timestamp_ms: int | None = None  # None: the producer's clock (Kafka's CreateTime)


def smoke_events(
    count: int, *, keys: int = 5, start_ms: int, events_per_second: float = 100.0, seed: int = 0
) -> list[dict[str, object]]:
    """`count` events {"key", "ts", "seq"} in event-time order, keys skewed (Zipf-like), seeded."""
    rng = random.Random(seed)
    names = [f"k{i}" for i in range(keys)]
    weights = [1.0 / (rank + 1) for rank in range(keys)]
    step_ms = 1000.0 / events_per_second
    return [
        {"key": rng.choices(names, weights)[0], "ts": start_ms + int(i * step_ms), "seq": i}
        for i in range(count)
    ]


def tumbling_counts(
    events: Iterable[dict[str, object]], window_ms: int
) -> dict[tuple[str, int], int]:
    """Expected smoke output: {(key, window_start_ms): count} for tumbling windows (pure)."""
    counts: Counter[tuple[str, int]] = Counter()
    for event in events:
        ts = int(event["ts"])  # type: ignore[arg-type]
        counts[(str(event["key"]), ts - ts % window_ms)] += 1
    return dict(counts)


def as_records(events: Iterable[dict[str, object]]) -> Iterator[Record]:
    """JSON records keyed by the event's key."""
    for event in events:
        yield Record(str(event["key"]).encode(), json.dumps(event).encode())


def watermark_markers(ts_ms: int, partitions: int, key: str = "_watermark") -> list[Record]:
    """One event at `ts_ms` for every partition, so the watermark of each one passes `ts_ms`.

    A windowed job's watermark is the minimum over partitions: an event that reaches only one
    partition fires no window. Markers are ordinary events (their key is counted like any other).
    """
    value = json.dumps({"key": key, "ts": ts_ms, "seq": -1}).encode()
    return [Record(key.encode(), value, partition) for partition in range(partitions)]


def produce(
    bootstrap: str, topic: str, records: Iterable[Record], *, rate: float | None = None
) -> int:
    """Send records (at most `rate` per second when given); returns how many were acknowledged."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    sent = 0
    started = time.monotonic()
    failures: list[Exception] = []  # errbacks instead of kept futures: constant memory
    try:
        for record in records:
            future = producer.send(
                topic, key=record.key, value=record.value, partition=record.partition,
                timestamp_ms=record.timestamp_ms,
            )  # fmt: skip
            future.add_errback(failures.append)
            sent += 1
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()
    finally:
        producer.close()
    if failures:  # nothing is silently dropped
        raise RuntimeError(f"{len(failures)} of {sent} records not sent to {topic}: {failures[0]}")
    return sent
