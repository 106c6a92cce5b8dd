"""The fraud feature jobs on the real stack: Kafka features and Redis equal plain Python."""

from __future__ import annotations

import bisect
import json
import math
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from ephemeral import SETTLE_S, private_featureset, running_job

from rtml import generate
from rtml.flinkrest import FlinkRest
from rtml.generators import GENERATORS, as_records
from rtml.kafka_io import read_committed, send_raw
from rtml.online_store import get_features
from rtml.stack import Stack

pytestmark = pytest.mark.integration

CARD_WINDOWS_MS = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000, "24h": 86_400_000}
MERCHANT_WINDOWS_MS = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000}
START_MS = 1_763_700_000_000

Event = dict
Windows = dict[str, list[Event]]


def as_of_each_event(
    events: list[Event], key: str, lengths: dict[str, int]
) -> Iterator[tuple[Event, Windows]]:
    """Every event with its windows: per name, the events of its `key` in [ts - length, ts] up
    to and including it. Events of a key are taken in the order given (the jobs' order)."""
    by_key: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_key[event[key]].append(event)
    for history in by_key.values():
        times = [e["ts"] for e in history]
        for i, event in enumerate(history):
            yield (
                event,
                {
                    name: history[bisect.bisect_left(times, event["ts"] - length) : i + 1]
                    for name, length in lengths.items()
                },
            )


def distinct(rows: list[Event], field: str) -> int:
    return len({e[field] for e in rows if e[field] is not None})


def first_in(rows: list[Event], event: Event, field: str) -> bool:
    """Whether `event`'s value of `field` is new in the window (the event itself included)."""
    return sum(1 for e in rows if e[field] == event[field]) == 1


def expected_card_features(events: list[Event]) -> dict[str, dict]:
    """Per event id, the fraud_card features computed directly from the events."""
    expected = {}
    for event, window in as_of_each_event(events, "card_id", CARD_WINDOWS_MS):
        amounts = {name: [e["amount"] for e in rows] for name, rows in window.items()}
        expected[event["event_id"]] = {
            "card_id": event["card_id"],
            "amount": event["amount"],
            **{f"tx_count_{name}": len(rows) for name, rows in window.items()},
            "amount_sum_5m": sum(amounts["5m"]),
            "amount_sum_24h": sum(amounts["24h"]),
            "amount_avg_24h": statistics.fmean(amounts["24h"]),
            "amount_min_5m": min(amounts["5m"]),
            "amount_max_24h": max(amounts["24h"]),
            "amount_std_24h": statistics.pstdev(amounts["24h"]),
            "amount_vs_avg_24h": event["amount"] / statistics.fmean(amounts["24h"]),
            "merchants_1m": distinct(window["1m"], "merchant_id"),
            "merchants_5m": distinct(window["5m"], "merchant_id"),
            "merchants_1h": distinct(window["1h"], "merchant_id"),
            "countries_1h": distinct(window["1h"], "country"),
            "countries_24h": distinct(window["24h"], "country"),
            "ips_1h": distinct(window["1h"], "ip"),
            "ips_24h": distinct(window["24h"], "ip"),
            "devices_24h": distinct(window["24h"], "device_id"),
            "country_new_24h": first_in(window["24h"], event, "country"),
            "ip_new_24h": first_in(window["24h"], event, "ip"),
            "device_new_24h": first_in(window["24h"], event, "device_id"),
        }
    return expected


def expected_merchant_features(events: list[Event]) -> dict[str, dict]:
    """Per event id, the fraud_merchant features computed directly from the events."""
    expected = {}
    in_time_order = sorted(events, key=lambda e: e["ts"])  # stable: ties keep generation order
    for event, window in as_of_each_event(in_time_order, "merchant_id", MERCHANT_WINDOWS_MS):
        amounts = {name: [e["amount"] for e in rows] for name, rows in window.items()}
        expected[event["event_id"]] = {
            "merchant_id": event["merchant_id"],
            **{f"tx_count_{name}": len(rows) for name, rows in window.items()},
            **{f"amount_sum_{name}": sum(values) for name, values in amounts.items()},
            "amount_vs_avg_1h": event["amount"] / statistics.fmean(amounts["1h"]),
            "cards_5m": distinct(window["5m"], "card_id"),
            "cards_1h": distinct(window["1h"], "card_id"),
        }
    return expected


def assert_same_features(got: dict, want: dict, where: str) -> None:
    for name, value in want.items():
        if isinstance(value, float):
            assert math.isclose(got[name], value, rel_tol=1e-9, abs_tol=1e-9), (where, name)
        else:  # exact, type included: a flag is true/false, not 1/0
            assert (got[name], type(got[name])) == (value, type(value)), (where, name)


def feature_rows(bootstrap: str, topic: str, count: int) -> list[dict]:
    """The committed feature rows, read until `count` arrived (and a while more, so duplicates
    would be seen too)."""
    records = read_committed(
        bootstrap, topic, until=lambda rs: len(rs) >= count, timeout_s=180, settle_s=SETTLE_S
    )
    return [json.loads(r.value) for r in records]


def assert_features_equal(
    rows: list[dict], expected: dict[str, dict], keep: Callable[[str], bool] = lambda _: True
) -> None:
    """One row per event, none twice, each equal to `expected` (only events `keep` selects)."""
    got = {row["event_id"]: row for row in rows}
    assert len(rows) == len(expected)
    assert got.keys() == expected.keys()
    for event_id, want in expected.items():
        if keep(event_id):
            assert_same_features(got[event_id], want, event_id)


def assert_newest_in_redis(
    client: redis.Redis, name: str, definition: dict, newest: dict[str, Event], expected: dict
) -> None:
    """Redis holds, per entity, the features of its newest event, with their event time."""
    entity = definition["entity"]
    for key, event in newest.items():
        online = get_features(client, name, key)
        assert online is not None, key
        assert online.values["event_id"] == event["event_id"], key
        want = {k: v for k, v in expected[event["event_id"]].items() if k != entity}
        assert_same_features(online.values, want, key)  # the entity is the key, not a value
        assert online.version == str(definition["version"])
        assert online.features["tx_count_1m"].event_ms == event["ts"]
        assert 0 < online.ttl_ms <= 2 * 86_400_000


def redis_snapshot(client: redis.Redis, featureset: str) -> dict[bytes, dict[bytes, bytes]]:
    return {key: client.hgetall(key) for key in client.scan_iter(match=f"rtml:fs:{featureset}:*")}


@pytest.fixture
def client(stack: Stack) -> Iterator[redis.Redis]:
    connection = redis.Redis(host="127.0.0.1", port=stack.settings.redis_port)
    yield connection
    connection.close()


def test_fraud_card_features_in_kafka_and_redis_equal_a_direct_computation(
    stack: Stack, stack_env: dict[str, str], rest: FlinkRest, client: redis.Redis, tmp_path: Path
) -> None:
    name, definition, featureset_env = private_featureset(tmp_path, "fraud_card")
    env = {**stack_env, **featureset_env}
    bootstrap = stack.settings.kafka_bootstrap
    fraud = GENERATORS["fraud"]
    events = fraud.generate(2000, seed=5, start_ms=START_MS, cards=60, rate=20.0)
    expected = expected_card_features(events)
    # The data exercises what is checked: new countries, IPs and devices, and repeated ones.
    for flag in ("country_new_24h", "ip_new_24h", "device_new_24h"):
        assert Counter(row[flag] for row in expected.values()).keys() == {True, False}, flag
    try:
        with running_job(env, rest, "features", name) as job_id:
            topic = definition["source"]["topic"]
            half = len(events) // 2
            generate.produce(bootstrap, topic, as_records(events[:half], fraud.key_of))
            bad = [
                b"{not json",
                json.dumps({**events[0], "card_id": None}).encode(),
                json.dumps({**events[0], "amount": "lots"}).encode(),
            ]
            send_raw(bootstrap, topic, bad, key=b"bad")
            # Redis goes away mid-stream: the job waits for it and loses no update.
            stack.down(["redis"])
            generate.produce(bootstrap, topic, as_records(events[half:], fraud.key_of))
            time.sleep(3)
            assert stack.up(["redis"]) == ["redis"]

            rows = feature_rows(bootstrap, definition["features_topic"], len(events))
            assert_features_equal(rows, expected)
            newest = {event["card_id"]: event for event in events}
            assert_newest_in_redis(client, name, definition, newest, expected)

            dead = read_committed(
                bootstrap, definition["source"]["dead_letter_topic"],
                until=lambda rs: len(rs) >= len(bad), timeout_s=60, settle_s=2,
            )  # fmt: skip
            reasons = {r.value: dict(r.headers)["rtml.reason"].decode() for r in dead}
            assert reasons == {
                bad[0]: "invalid_json",
                bad[1]: "missing_card_id",
                bad[2]: "missing_or_invalid_amount",
            }
            per_reason = dict(Counter(reasons.values()))
            assert rest.wait_for_dead_letter_counts(job_id, per_reason) == per_reason

            # A replay of the same history (a second job from the earliest offsets) changes
            # nothing.
            before = redis_snapshot(client, name)
            replay_env = {
                **env, "RTML_FEATURES_ID_PREFIX": env["RTML_FEATURES_ID_PREFIX"] + "-replay"
            }  # fmt: skip
            with running_job(replay_env, rest, "features", name):
                feature_rows(bootstrap, definition["features_topic"], 2 * len(events))
                # the replay's last Redis batch is acknowledged before its next checkpoint
                time.sleep(SETTLE_S)
                assert redis_snapshot(client, name) == before
    finally:
        stack.up(["redis"])  # whatever happened, leave Redis running for the tests after this


def test_fraud_merchant_features_are_exact_in_event_time_order(
    stack: Stack, stack_env: dict[str, str], rest: FlinkRest, client: redis.Redis, tmp_path: Path
) -> None:
    name, definition, featureset_env = private_featureset(tmp_path, "fraud_merchant")
    env = {**stack_env, **featureset_env}
    bootstrap = stack.settings.kafka_bootstrap
    fraud = GENERATORS["fraud"]
    # 600 transactions over 5 minutes of event time: the 1 min window evicts, the others fill.
    events = fraud.generate(600, seed=9, start_ms=START_MS, cards=40, merchants=30, rate=2.0)
    expected = expected_merchant_features(events)
    # Keyed by card, a merchant's transactions reach the job through both partitions, out of
    # order; the job puts them in event-time order. Equal times would have no one right order:
    # check the merchants without them.
    times = Counter((e["merchant_id"], e["ts"]) for e in events)
    tied = {merchant for (merchant, _), n in times.items() if n > 1}
    merchants = {e["merchant_id"] for e in events}
    assert len(tied) <= len(merchants) // 5, tied  # the test itself is sound
    by_event = {e["event_id"]: e for e in events}
    with running_job(env, rest, "features", name) as job_id:
        topic = definition["source"]["topic"]
        generate.produce(bootstrap, topic, as_records(events, fraud.key_of))
        # Features follow the watermark: a later marker on every partition releases them all
        # (and is a dead letter of its own, with no event id).
        partitions = definition["source"]["partitions"]
        last_ms = max(e["ts"] for e in events)
        generate.produce(bootstrap, topic, generate.watermark_markers(last_ms + 60_000, partitions))

        rows = feature_rows(bootstrap, definition["features_topic"], len(events))
        assert_features_equal(
            rows, expected, keep=lambda event_id: by_event[event_id]["merchant_id"] not in tied
        )
        newest = {
            e["merchant_id"]: e
            for e in sorted(events, key=lambda e: e["ts"])
            if e["merchant_id"] not in tied
        }
        assert_newest_in_redis(client, name, definition, newest, expected)
        # The job's dead-letter metric counts the markers (no event id) by reason.
        markers = {"missing_event_id": partitions}
        assert rest.wait_for_dead_letter_counts(job_id, markers) == markers
