"""Kafka and Redis I/O of a backtest: whole production topics read to their end (read_committed),
and the optional run-scoped outputs written."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kafka.consumer.fetcher import ConsumerRecord


class TopicReadError(RuntimeError):
    """A topic could not be read to its end (the broker stopped answering)."""


def read_to_end(
    bootstrap: str, topic: str, *, stall_timeout_s: float = 60.0
) -> Iterator[ConsumerRecord] | None:
    """Every committed record of `topic`, partition by partition in offset order,
    up to the end offsets as they were when called (records written later are not waited for).
    None if the topic does not exist.

    read_committed: aborted transactions and open ones are not read, as a downstream consumer
    sees the topic. A read that makes no progress for `stall_timeout_s` raises TopicReadError
    instead of hanging.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        isolation_level="read_committed", auto_offset_reset="earliest",
        client_id="rtml-backtest", max_partition_fetch_bytes=8 * 1024 * 1024,
    )  # fmt: skip
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        consumer.close()
        return None

    def records() -> Iterator[ConsumerRecord]:
        try:
            for partition in sorted(partitions):
                tp = TopicPartition(topic, partition)
                consumer.assign([tp])
                start = consumer.beginning_offsets([tp])[tp]
                end = consumer.end_offsets([tp])[tp]  # the last stable offset
                if start >= end:
                    continue
                consumer.seek(tp, start)
                progress_at = time.monotonic()
                while consumer.position(tp) < end:
                    batch = consumer.poll(timeout_ms=500).get(tp, [])
                    if batch:
                        progress_at = time.monotonic()
                    elif time.monotonic() - progress_at > stall_timeout_s:
                        raise TopicReadError(
                            f"{topic} partition {partition}: no record read for "
                            f"{stall_timeout_s:.0f} s at offset {consumer.position(tp)} of {end}"
                        )
                    for record in batch:
                        if record.offset >= end:
                            break
                        yield record
        finally:
            consumer.close()

    return records()


def end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[str, dict[int, int]]:
    """Per topic and partition, the end offset (read_uncommitted: every record written)."""
    from rtml import kafka_io

    return {topic: kafka_io.end_offsets(bootstrap, topic) for topic in topics}


def write_predictions(
    bootstrap: str, topic: str, rows: Sequence[Mapping[str, Any]], partitions: int
) -> int:
    """Create the run-scoped `topic` (it must not exist: a run writes its own) and send one JSON
    record per row, keyed by entity; returns the count once the broker has them all."""
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="rtml-backtest")
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    except TopicAlreadyExistsError:
        raise TopicReadError(
            f"--output-topic {topic} exists already: a backtest writes a topic of its own"
        ) from None
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    try:
        for row in rows:
            producer.send(
                topic, key=str(row["entity"]).encode(),
                value=json.dumps(row, separators=(",", ":")).encode(),
            )  # fmt: skip
        producer.flush(timeout=120)
    finally:
        producer.close()
    return len(rows)


def write_features(
    redis_url: str, prefix: str, rows: Sequence[Mapping[str, Any]], *, entity: str, time_ms: str
) -> int:
    """Each entity's newest recomputed features as a HASH `<prefix><entity>`, values encoded as
    the online store encodes them (`{"t":<event ms>,"v":<value>}`); returns the keys written.

    The prefix was checked to be run-scoped and outside the online store's namespace, so this
    never touches a production key.
    """
    import redis

    from rtml.online_store import encode, normalize_value

    newest: dict[str, Mapping[str, Any]] = {}
    for row in rows:  # rows come in event-time order: the last one per entity is the newest
        newest[str(row[entity])] = row
    client = redis.Redis.from_url(redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        for n, (key, row) in enumerate(newest.items(), 1):
            t = int(row[time_ms])
            fields = {
                name: encode(normalize_value(value), t)
                for name, value in row.items()
                if name not in (entity, time_ms)
            }
            pipe.hset(f"{prefix}{key}", mapping=fields)
            if n % 500 == 0:
                pipe.execute()
        pipe.execute()
    finally:
        client.close()
    return len(newest)
