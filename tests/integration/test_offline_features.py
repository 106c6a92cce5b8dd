"""fraud_card's own SQL over a bounded Kafka range on the real stack: exactly the events in range,
windows warmed up by the history before it, bad records counted, edge cases fail fast."""

from __future__ import annotations

import bisect
import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict

import pandas as pd
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from rtml import featuresets, generate, kafka_admin
from rtml.generators import fraud
from rtml.offline import KafkaOffsets, KafkaRange, RangeError, compute_features, resolve
from rtml.settings import FeatureJobSettings
from rtml.stack import Stack

pytestmark = pytest.mark.integration

WINDOWS_MS = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000, "24h": 86_400_000}


def window_features(events: list[dict]) -> dict[str, dict[str, float]]:
    """Per event id, counts and sums over each card's windows [t - length, t], from `events`."""
    by_card: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        by_card[event["card_id"]].append(event)
    out = {}
    for history in by_card.values():
        times = [e["ts"] for e in history]
        for i, event in enumerate(history):
            rows = {
                name: history[bisect.bisect_left(times, event["ts"] - length) : i + 1]
                for name, length in WINDOWS_MS.items()
            }
            out[event["event_id"]] = {
                **{f"tx_count_{name}": len(r) for name, r in rows.items()},
                "amount_sum_5m": sum(e["amount"] for e in rows["5m"]),
                "amount_sum_24h": sum(e["amount"] for e in rows["24h"]),
                "amount_max_24h": max(e["amount"] for e in rows["24h"]),
            }
    return out


def records(events: list[dict], partitions: int) -> list[generate.Record]:
    """Keyed by card on partitions 0..partitions-1 (so a third partition stays empty), with the
    event time as the record timestamp."""
    return [
        generate.Record(
            e["card_id"].encode(),
            json.dumps(e).encode(),
            sum(e["card_id"].encode()) % partitions,
            e["ts"],
        )  # fmt: skip
        for e in events
    ]


@pytest.fixture(scope="module")
def history(stack: Stack) -> dict:
    """1200 transactions over ~3.3 h on a 3-partition topic (partition 2 empty), two bad records
    in the middle."""
    bootstrap = stack.settings.kafka_bootstrap
    topic = f"it.offline.{uuid.uuid4().hex[:8]}"
    kafka_admin.ensure_topics(bootstrap, {topic: 3})
    start_ms = int(time.time() * 1000) - 4 * 3_600_000
    events = fraud.generate(1200, seed=7, start_ms=start_ms, rate=0.1, cards=40)
    middle = events[700]
    bad = [
        generate.Record(b"bad", b"{not json", 0, middle["ts"]),
        generate.Record(b"bad", json.dumps({**middle, "card_id": None}).encode(), 0, middle["ts"]),
    ]
    generate.produce(bootstrap, topic, [*records(events[:700], 2), *bad])
    generate.produce(bootstrap, topic, records(events[700:], 2))
    settings = FeatureJobSettings(kafka_bootstrap=bootstrap)
    definition = featuresets.load("fraud_card", settings.features_dir)
    return {"topic": topic, "events": events, "settings": settings, "definition": definition}


def test_time_range_gives_exactly_its_events_with_windows_warmed_up(
    stack: Stack, history: dict
) -> None:
    events, topic = history["events"], history["topic"]
    from_ms, to_ms = events[500]["ts"], events[900]["ts"]
    progress: list[int] = []
    result = compute_features(
        history["definition"], KafkaRange.by_time(from_ms, to_ms), history["settings"],
        topic=topic, on_progress=progress.append,
    )  # fmt: skip
    inside = [e for e in events if from_ms <= e["ts"] < to_ms]
    rows = result.rows
    assert len(rows) == len(inside)  # one row per event in range, none twice
    assert set(rows["event_id"]) == {e["event_id"] for e in inside}

    # The features of the first events equal those over the whole history (the warm-up read the
    # 24 h before --from), not those over the range alone.
    whole, alone = window_features(events), window_features(inside)
    for row in rows.to_dict("records"):
        want = whole[row["event_id"]]
        for name, value in want.items():
            assert math.isclose(row[name], value, rel_tol=1e-9), (row["event_id"], name)
    first = rows.head(50)
    assert any(alone[i]["tx_count_1h"] < whole[i]["tx_count_1h"] for i in first["event_id"])

    assert result.dead_letter_counts == {"invalid_json": 1, "missing_card_id": 1}
    assert result.range.start[2] == result.range.end[2] == 0  # the empty partition: no hang
    assert result.range.start[0] < result.range.first[0]  # the warm-up started earlier
    assert result.summary()["rows"] == len(inside)

    # Progress: records read, never going back, all of them at the end (the job may be over
    # before its first commit); then the run's group, which committed only for counting, is gone.
    assert progress and progress == sorted(progress), progress
    assert progress[-1] == result.range.offsets_read, (progress, result.range.offsets_read)
    admin = KafkaAdminClient(bootstrap_servers=stack.settings.kafka_bootstrap)
    try:
        groups = {group["group_id"] for group in admin.list_groups()}
    finally:
        admin.close()
    assert f"rtml-offline-{history['definition'].name}-{result.run_id}" not in groups


def test_rocksdb_state_gives_the_heap_states_features(history: dict) -> None:
    """RTML_OFFLINE_STATE=rocksdb (state as the live job keeps it, for ranges too large for the
    heap) computes every feature of every event exactly as the default heap state does."""
    frames = {}
    for state in ("heap", "rocksdb"):
        settings = history["settings"].model_copy(update={"offline_state": state})
        result = compute_features(
            history["definition"], KafkaRange.everything(), settings, topic=history["topic"]
        )
        frames[state] = result.rows.sort_values("event_id").reset_index(drop=True)
        assert result.dead_letter_counts == {"invalid_json": 1, "missing_card_id": 1}
    assert len(frames["heap"]) == len(history["events"])
    pd.testing.assert_frame_equal(frames["heap"], frames["rocksdb"], check_exact=True)


def test_range_edge_cases_fail_fast_with_clear_messages(stack: Stack, history: dict) -> None:
    events, topic = history["events"], history["topic"]
    definition, settings = history["definition"], history["settings"]
    bootstrap = stack.settings.kafka_bootstrap
    cases = [
        (
            KafkaRange.by_time(events[-1]["ts"] + 60_000),
            "range beyond the end of topic .*: --from .* is after its newest record",
        ),
        (
            KafkaRange.by_time(events[0]["ts"] - 7_200_000, events[0]["ts"] - 3_600_000),
            "empty range: no record of topic",
        ),
        (KafkaRange.by_offsets({0: 0}, {0: 100_000}), "beyond the end .* partition 0 ends at"),
        (KafkaRange.by_offsets({2: 0}), "empty range: no record to read in offsets 2:0-end"),
        (KafkaRange.from_group(f"nobody-{uuid.uuid4().hex[:6]}"), "has no committed offsets"),
    ]
    for kafka_range, message in cases:
        started = time.monotonic()
        with pytest.raises(RangeError, match=message):
            compute_features(definition, kafka_range, settings, topic=topic)
        assert time.monotonic() - started < 30, message
    with pytest.raises(RangeError, match="does not exist"):
        compute_features(definition, KafkaRange.everything(), settings, topic="it.offline.none")

    # A consumer group's committed offsets are where the range starts.
    group = f"it-offline-{uuid.uuid4().hex[:6]}"
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        consumer.commit(
            {
                TopicPartition(topic, p): OffsetAndMetadata(o, "", -1)
                for p, o in enumerate([40, 30, 0])
            }
        )
    finally:
        consumer.close()
    broker = KafkaOffsets(bootstrap, topic)
    try:
        resolved = resolve(KafkaRange.from_group(group), broker, topic=topic, warm_up_ms=0)
    finally:
        broker.close()
    assert resolved.first == {0: 40, 1: 30, 2: 0}

    # Deleted records: an offset below the log start is refused, not silently skipped.
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_records({TopicPartition(topic, 1): 10})
    finally:
        admin.close()
    with pytest.raises(RangeError, match="partition 1 of .*: offset 5 was deleted .* starts at 10"):
        compute_features(definition, KafkaRange.by_offsets({1: 5}), settings, topic=topic)


_GC_PROBE = """
import json, sys
from rtml import featuresets
from rtml.offline import KafkaRange, compute_features
from rtml.settings import FeatureJobSettings
from pyflink.java_gateway import get_gateway

settings = FeatureJobSettings(kafka_bootstrap=sys.argv[1])
definition = featuresets.load("fraud_card", settings.features_dir)
result = compute_features(definition, KafkaRange.everything(), settings, topic=sys.argv[2])
beans = get_gateway().jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()
print(json.dumps({"rows": len(result.rows), "dead_letters": result.dead_letter_counts,
                  "collectors": [bean.getName() for bean in beans]}))
"""


def test_an_offline_run_in_a_fresh_process_gets_the_parallel_collector(
    stack: Stack, history: dict
) -> None:
    """The JVM a process starts for its first offline run uses the parallel collector (faster
    than G1 there; README, "Offline features"). A collector the user names in JVM_ARGS is kept:
    tests/rtml/test_offline.py."""
    env = {k: v for k, v in os.environ.items() if k != "JVM_ARGS"}
    done = subprocess.run(
        [sys.executable, "-c", _GC_PROBE, stack.settings.kafka_bootstrap, history["topic"]],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    broker = KafkaOffsets(stack.settings.kafka_bootstrap, history["topic"])
    try:  # what is on the topic now (the edge cases' test deletes some records)
        start, end = broker.log_start(), broker.log_end()
    finally:
        broker.close()
    assert probe["dead_letters"] == {"invalid_json": 1, "missing_card_id": 1}
    assert probe["rows"] == sum(end[p] - start[p] for p in end) - 2
    assert set(probe["collectors"]) == {"PS Scavenge", "PS MarkSweep"}
