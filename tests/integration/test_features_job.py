"""The fraud_card feature job on the real stack: Kafka features and Redis equal plain Python."""

from __future__ import annotations

import bisect
import json
import math
import shutil
import statistics
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
import redis
import yaml
from ephemeral import run_rtml

from rtml import generate
from rtml.flinkrest import FlinkRest
from rtml.generators import GENERATORS, as_records
from rtml.kafka_io import read_committed, send_raw
from rtml.online_store import get_features
from rtml.settings import PROJECT_ROOT
from rtml.stack import Stack

pytestmark = pytest.mark.integration

WINDOWS_MS = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000, "24h": 86_400_000}
START_MS = 1_763_700_000_000


def expected_features(events: list[dict]) -> dict[str, dict[str, float]]:
    """Per event id, the fraud_card features computed directly from the events."""
    by_card: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        by_card[event["card_id"]].append(event)
    expected = {}
    for history in by_card.values():
        times = [e["ts"] for e in history]
        for i, event in enumerate(history):
            window = {
                name: history[bisect.bisect_left(times, event["ts"] - length) : i + 1]
                for name, length in WINDOWS_MS.items()
            }
            amounts = {name: [e["amount"] for e in rows] for name, rows in window.items()}
            merchants = {name: {e["merchant_id"] for e in rows} for name, rows in window.items()}
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
                "merchants_1m": len(merchants["1m"]),
                "merchants_5m": len(merchants["5m"]),
                "merchants_1h": len(merchants["1h"]),
            }
    return expected


def assert_same_features(got: dict, want: dict, where: str) -> None:
    for name, value in want.items():
        if isinstance(value, float):
            assert math.isclose(got[name], value, rel_tol=1e-9, abs_tol=1e-9), (where, name)
        else:
            assert got[name] == value, (where, name)


@pytest.fixture
def featureset(tmp_path: Path) -> tuple[str, dict]:
    """A copy of fraud_card with topics, name and ids of its own (the SQL is the real one)."""
    run = uuid.uuid4().hex[:8]
    name = f"fraud_card_{run}"
    features_dir = tmp_path / "features"
    (tmp_path / "sources").mkdir(parents=True)
    features_dir.mkdir()
    shutil.copy(PROJECT_ROOT / "sql" / "features" / "fraud_card.sql", features_dir)
    shutil.copy(PROJECT_ROOT / "sql" / "sources" / "fraud_transactions.sql", tmp_path / "sources")
    definition = yaml.safe_load((PROJECT_ROOT / "sql" / "features" / "fraud_card.yaml").read_text())
    definition["name"] = name
    definition["features_topic"] = f"{name}.features"
    definition["source"]["topic"] = f"{name}.transactions"
    definition["source"]["dead_letter_topic"] = f"{name}.dead-letter"
    (features_dir / f"{name}.yaml").write_text(yaml.safe_dump(definition))
    env = {"RTML_FEATURES_DIR": str(features_dir), "RTML_FEATURES_ID_PREFIX": f"it-{run}"}
    return name, {"definition": definition, "env": env}


def redis_snapshot(client: redis.Redis, featureset: str) -> dict[bytes, dict[bytes, bytes]]:
    return {key: client.hgetall(key) for key in client.scan_iter(match=f"rtml:fs:{featureset}:*")}


def test_features_in_kafka_and_redis_equal_a_direct_computation(
    stack: Stack, stack_env: dict[str, str], featureset: tuple[str, dict]
) -> None:
    name, spec = featureset
    env = {**stack_env, **spec["env"]}
    definition = spec["definition"]
    bootstrap = stack.settings.kafka_bootstrap
    rest = FlinkRest(stack.settings.flink_rest_url)
    submitted = run_rtml(env, "submit", "features", name, "--detached", timeout=300)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().splitlines()[-1]
    try:
        rest.wait_for_state(job_id, {"RUNNING"}, timeout_s=120)
        fraud = GENERATORS["fraud"]
        events = fraud.generate(2000, seed=5, start_ms=START_MS, cards=60, rate=20.0)
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

        records = read_committed(
            bootstrap, definition["features_topic"],
            until=lambda rs: len(rs) >= len(events), timeout_s=180, settle_s=5,
        )  # fmt: skip
        expected = expected_features(events)
        got = {row["event_id"]: row for row in (json.loads(r.value) for r in records)}
        assert len(records) == len(events)  # one feature row per transaction, none twice
        assert got.keys() == expected.keys()
        for event_id, want in expected.items():
            assert_same_features(got[event_id], want, event_id)

        # Redis holds, per card, the features of its newest transaction.
        newest: dict[str, dict] = {}
        for event in events:
            newest[event["card_id"]] = event
        client = redis.Redis(host="127.0.0.1", port=stack.settings.redis_port)
        for card, event in newest.items():
            online = get_features(client, name, card)
            assert online is not None, card
            assert online.values["event_id"] == event["event_id"]
            want = {k: v for k, v in expected[event["event_id"]].items() if k != "card_id"}
            assert_same_features(online.values, want, card)  # the entity is the key, not a value
            assert online.version == str(definition["version"])
            assert online.features["tx_count_1m"].event_ms == event["ts"]
            assert 0 < online.ttl_ms <= 2 * 86_400_000

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

        # A replay of the same history (a second job from the earliest offsets) changes nothing.
        before = redis_snapshot(client, name)
        replay_env = {**env, "RTML_FEATURES_ID_PREFIX": env["RTML_FEATURES_ID_PREFIX"] + "-replay"}
        replayed = run_rtml(replay_env, "submit", "features", name, "--detached", timeout=300)
        assert replayed.returncode == 0, replayed.stderr
        replay_id = replayed.stdout.strip().splitlines()[-1]
        try:
            read_committed(
                bootstrap, definition["features_topic"],
                until=lambda rs: len(rs) >= 2 * len(events), timeout_s=180, settle_s=5,
            )  # fmt: skip
            time.sleep(6)  # the replay's last Redis batch is acknowledged before its checkpoint
            assert redis_snapshot(client, name) == before
        finally:
            rest.cancel(replay_id)
    finally:
        rest.cancel(job_id)
        stack.up(["redis"])  # whatever happened, leave Redis running for the tests after this
