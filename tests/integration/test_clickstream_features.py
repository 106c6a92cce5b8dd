"""The clickstream feature jobs on the real stack: session, hopping, tumbling and per-event sliding
windows. Features topic (read_committed) and Redis equal a plain Python computation of the same
windows over the same seeded events; every bad-input kind of the source is dead-lettered."""

from __future__ import annotations

import bisect
import json
import math
import shutil
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import yaml
from ephemeral import SETTLE_S, run_rtml

from rtml import generate, kafka_admin
from rtml.flinkrest import FlinkRest
from rtml.generate import Record
from rtml.generators import GENERATORS, as_records
from rtml.kafka_io import read_committed, send_raw
from rtml.online_store import get_features
from rtml.settings import PROJECT_ROOT
from rtml.stack import Stack

pytestmark = pytest.mark.integration

START_MS = 1_763_700_000_000
PARTITIONS = 2
MINUTE = 60_000
SESSION_GAP_MS = 30 * MINUTE
MARKER = "_watermark"
EXTRA_MS = 3600_000  # markers this far after the last event: every window of the events closes

Features = dict[str, object]


# -- the same windows in plain Python --------------------------------------------------------------


def count_actions(events: list[dict]) -> dict[str, int]:
    return {
        name: sum(e["action"] == action for e in events)
        for name, action in (("views", "view"), ("carts", "cart"), ("purchases", "purchase"))
    }


def ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def expected_sessions(events: list[dict]) -> dict[tuple[str, int], Features]:
    """(user, session start ms) -> features. A session ends when the user's next event is more than
    30 minutes later (Flink merges session windows that touch, so exactly 30 min stays in)."""
    by_user: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        by_user[event["user_id"]].append(event)
    sessions: list[list[dict]] = []
    for history in by_user.values():
        sessions.append([history[0]])
        for previous, event in zip(history, history[1:], strict=False):
            if event["ts"] - previous["ts"] > SESSION_GAP_MS:
                sessions.append([])
            sessions[-1].append(event)
    expected = {}
    for session in sessions:
        start, last = session[0]["ts"], session[-1]["ts"]
        actions = count_actions(session)
        expected[(session[0]["user_id"], start)] = {
            "user_id": session[0]["user_id"],
            "session_start_ms": start,
            "session_last_ms": last,
            "duration_ms": last - start,
            "events": len(session),
            **actions,
            "view_to_cart_ratio": ratio(actions["carts"], actions["views"]),
            "items": len({e["item_id"] for e in session}),
            "categories": len({e["category"] for e in session}),
        }
    return expected


def expected_windows(
    events: list[dict], entity: str, size_ms: int, slide_ms: int, features: Callable
) -> dict[tuple[str, int], Features]:
    """(entity, window end ms) -> features of epoch-aligned windows [start, start + size_ms)."""
    members: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for event in events:
        last_start = event["ts"] - event["ts"] % slide_ms
        for start in range(last_start, event["ts"] - size_ms, -slide_ms):
            members[(event[entity], start + size_ms)].append(event)
    return {
        key: {entity: key[0], "window_start_ms": key[1] - size_ms, "window_end_ms": key[1]}
        | features(rows)
        for key, rows in members.items()
    }


def category_features(rows: list[dict]) -> Features:
    actions = count_actions(rows)
    return {
        "events": len(rows),
        "views": actions["views"],
        "carts": actions["carts"],
        "cart_rate": ratio(actions["carts"], actions["views"]),
        "users": len({e["user_id"] for e in rows}),
    }


def item_features(rows: list[dict]) -> Features:
    return count_actions(rows) | {"users": len({e["user_id"] for e in rows})}


def expected_per_event(events: list[dict]) -> dict[str, Features]:
    """event id -> the user's features over [ts - length, ts], the event included."""
    by_user: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        by_user[event["user_id"]].append(event)
    expected = {}
    for history in by_user.values():
        times = [e["ts"] for e in history]
        for i, event in enumerate(history):
            last_5m = history[bisect.bisect_left(times, event["ts"] - 5 * MINUTE) : i + 1]
            last_30m = history[bisect.bisect_left(times, event["ts"] - 30 * MINUTE) : i + 1]
            same_category = sum(e["category"] == event["category"] for e in last_30m)
            expected[event["event_id"]] = {
                "user_id": event["user_id"],
                "ts": event["ts"],
                "action": event["action"],
                "category": event["category"],
                "item_id": event["item_id"],
                "events_5m": len(last_5m),
                "events_30m": len(last_30m),
                "carts_30m": sum(e["action"] == "cart" for e in last_30m),
                "categories_30m": len({e["category"] for e in last_30m}),
                "items_30m": len({e["item_id"] for e in last_30m}),
                "category_events_30m": same_category,
                "category_affinity_30m": same_category / len(last_30m),
            }
    return expected


def newest(expected: dict, entity: str, time_column: str) -> dict[str, Features]:
    """Per entity, the expected row with the newest event time: what Redis must hold."""
    best: dict[str, Features] = {}
    for row in expected.values():
        held = best.get(row[entity])
        if held is None or row[time_column] > held[time_column]:
            best[row[entity]] = row
    return best


def same(got: object, want: object) -> bool:
    if isinstance(want, float):
        return isinstance(got, float) and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)
    return type(got) is type(want) and got == want


def assert_same_features(got: Features, want: Features, where: object) -> None:
    mismatches = {
        k: (got.get(k, "<missing>"), v) for k, v in want.items() if not same(got.get(k), v)
    }
    assert not mismatches, (where, mismatches)


# -- the test --------------------------------------------------------------------------------------


def events_and_bad_records() -> tuple[list[dict], list[bytes | None], dict[int, str]]:
    """Seeded events (1500, ~3 h of event time, users with several sessions) and one bad record of
    every kind, with the reason each must get (by index into the bad records)."""
    clickstream = GENERATORS["clickstream"]
    events = clickstream.generate(1500, seed=7, start_ms=START_MS, rate=0.5, users=60)
    good = {k: events[0][k] for k in ("event_id", "ts", "user_id", "item_id", "category")}
    good["action"] = "view"
    kinds = {
        "invalid_json": b'{"event_id": "x", ',
        "empty_payload": None,
        "missing_event_id": {**good, "event_id": None},
        "missing_user_id": {k: v for k, v in good.items() if k != "user_id"},
        "invalid_user_id": {**good, "user_id": 42},
        "missing_item_id": {**good, "item_id": None},
        "invalid_item_id": {**good, "item_id": {"id": "i-1"}},
        "missing_category": {k: v for k, v in good.items() if k != "category"},
        "invalid_category": {**good, "category": ""},
        "missing_action": {**good, "action": None},
        "unknown_action": {**good, "action": "wishlist"},
        "missing_or_invalid_ts": {**good, "ts": "yesterday"},
    }
    bad = [
        v if v is None or isinstance(v, bytes) else json.dumps(v).encode() for v in kinds.values()
    ]
    return events, bad, dict(enumerate(kinds))


def markers(ts_ms: int) -> list[tuple[dict, Record]]:
    """A valid event at `ts_ms` on every partition, so every partition's watermark passes the
    events' windows. The markers' own windows never close (nothing comes after them)."""
    out = []
    for partition in range(PARTITIONS):
        event = {
            "event_id": f"{MARKER}-{partition}", "ts": ts_ms, "user_id": MARKER,
            "item_id": MARKER, "category": MARKER, "action": "view",
        }  # fmt: skip
        out.append((event, Record(MARKER.encode(), json.dumps(event).encode(), partition)))
    return out


@pytest.fixture
def featuresets(tmp_path: Path) -> tuple[str, Path]:
    """Copies of the shipped clickstream feature sets with names, topics and ids of their own (the
    SQL is the real one); each has its own source topic, so each job sees the same history."""
    run = uuid.uuid4().hex[:8]
    features_dir = tmp_path / "features"
    features_dir.mkdir()
    (tmp_path / "sources").mkdir()
    shutil.copy(PROJECT_ROOT / "sql" / "sources" / "clickstream_events.sql", tmp_path / "sources")
    for kind in ("session", "category", "item", "user"):
        shipped = f"clickstream_{kind}"
        name = f"{shipped}_{run}"
        definition = yaml.safe_load(
            (PROJECT_ROOT / "sql" / "features" / f"{shipped}.yaml").read_text()
        )
        definition["name"] = name
        definition["query"] = f"{shipped}.sql"
        definition["features_topic"] = f"{name}.features"
        definition["source"]["topic"] = f"{name}.events"
        definition["source"]["dead_letter_topic"] = f"{name}.dead-letter"
        shutil.copy(PROJECT_ROOT / "sql" / "features" / f"{shipped}.sql", features_dir)
        (features_dir / f"{name}.yaml").write_text(yaml.safe_dump(definition))
    return run, features_dir


def test_clickstream_windows_in_kafka_and_redis_equal_a_direct_computation(
    stack: Stack, stack_env: dict[str, str], featuresets: tuple[str, Path]
) -> None:
    run, features_dir = featuresets
    env = {
        **stack_env,
        "RTML_FEATURES_DIR": str(features_dir),
        "RTML_FEATURES_ID_PREFIX": f"it-{run}",
    }
    bootstrap = stack.settings.kafka_bootstrap
    rest = FlinkRest(stack.settings.flink_rest_url)
    redis_port = stack.settings.redis_port
    events, bad, reasons = events_and_bad_records()
    marked = markers(events[-1]["ts"] + EXTRA_MS)
    key_of = GENERATORS["clickstream"].key_of

    # The generator's sessions are what a 30-minute gap finds (its gaps: < 10 min within a
    # session, > 30 min between): the SQL's choice of gap recovers the ground truth.
    sessions = expected_sessions(events)
    truth = {(e["user_id"], e["session_hint"]) for e in events}
    assert len(sessions) == len(truth)
    assert len(truth) > len({user for user, _ in truth}) + 20  # many users with several sessions

    # name -> (expected rows by key, key of a topic row, entity, Redis event-time column)
    cases: dict[str, tuple[dict, Callable[[dict], object], str, str]] = {
        "session": (
            sessions, lambda r: (r["user_id"], r["session_start_ms"]), "user_id",
            "session_last_ms",
        ),
        "category": (
            expected_windows(events, "category", 10 * MINUTE, MINUTE, category_features),
            lambda r: (r["category"], r["window_end_ms"]), "category", "window_end_ms",
        ),
        "item": (
            expected_windows(events, "item_id", MINUTE, MINUTE, item_features),
            lambda r: (r["item_id"], r["window_end_ms"]), "item_id", "window_end_ms",
        ),
        "user": (expected_per_event(events), lambda r: r["event_id"], "user_id", "ts"),
    }  # fmt: skip
    # Some category windows have carts but no view (the view was in the window before): their
    # cart rate is NULL (null on the features topic), and the test covers that case.
    assert any(row["cart_rate"] is None for row in cases["category"][0].values())

    # The four jobs run side by side (the TaskManager has a slot each), submitted and checked at
    # once: most of each check is waiting for checkpoints and for duplicates that must not come.
    for kind in cases:
        name = f"clickstream_{kind}_{run}"
        topic = f"{name}.events"
        # Kafka creates no topic by itself; the job's own ensure_topics then finds it in place.
        kafka_admin.ensure_topics(bootstrap, {topic: PARTITIONS})
        send_raw(bootstrap, topic, bad, key=b"bad")
        generate.produce(bootstrap, topic, as_records(events, key_of))
        generate.produce(bootstrap, topic, [record for _, record in marked])
    with ThreadPoolExecutor(len(cases)) as pool:
        submissions = dict(zip(cases, pool.map(
            lambda kind: run_rtml(env, "submit", "features", f"clickstream_{kind}_{run}",
                                  "--detached", timeout=300),
            cases,
        ), strict=True))  # fmt: skip
    job_ids = [
        submitted.stdout.strip().splitlines()[-1]
        for submitted in submissions.values()
        if submitted.returncode == 0
    ]
    try:
        for kind, submitted in submissions.items():
            assert submitted.returncode == 0, (kind, submitted.stderr)
        with ThreadPoolExecutor(len(cases)) as pool:
            checks = [
                pool.submit(
                    check_job, kind, run, bootstrap, redis_port, events, bad, reasons, *case
                )
                for kind, case in cases.items()
            ]
            for check in checks:
                check.result()  # re-raises a check's assertion error
    finally:
        for job_id in job_ids:
            rest.cancel(job_id)


def check_job(
    kind: str, run: str, bootstrap: str, redis_port: int, events: list[dict],
    bad: list[bytes | None], reasons: dict[int, str], expected: dict,
    key: Callable[[dict], object], entity: str, time_column: str,
) -> None:  # fmt: skip
    """One job's features topic and Redis equal `expected`; its bad and late records are dead
    letters with their reasons."""
    client = redis.Redis(host="127.0.0.1", port=redis_port)
    name = f"clickstream_{kind}_{run}"
    topic, features_topic = f"{name}.events", f"{name}.features"
    dead_letter_topic = f"{name}.dead-letter"
    # Per event, the markers get rows too (in an order between partitions that is not fixed, so
    # they are only counted); their windows never close, so no window rows.
    marker_rows = PARTITIONS if kind == "user" else 0
    wanted = len(expected) + marker_rows
    records = read_committed(
        bootstrap, features_topic,
        until=lambda rs, n=wanted: len(rs) >= n, timeout_s=240, settle_s=SETTLE_S,
    )  # fmt: skip
    rows = [json.loads(r.value) for r in records]
    assert all(r.key.decode() == row[entity] for r, row in zip(records, rows, strict=True))
    assert sum(row[entity] == MARKER for row in rows) == marker_rows, kind
    rows = [row for row in rows if row[entity] != MARKER]
    got = {key(row): row for row in rows}
    assert len(rows) == len(got), f"{kind}: a row written twice"
    assert got.keys() == expected.keys(), kind
    for row_key, want in expected.items():
        assert_same_features(got[row_key], want, (kind, row_key))

    # Redis holds, per entity, the row of its newest event time.
    for entity_id, want in newest(expected, entity, time_column).items():
        online = get_features(client, name, entity_id)
        assert online is not None, (kind, entity_id)
        values = {k: v for k, v in want.items() if k not in (entity, time_column)}
        assert_same_features(online.values, values, (kind, entity_id))
        assert {f.event_ms for f in online.features.values()} == {want[time_column]}

    # An event behind the watermark now is late: dead-lettered, not silently dropped.
    late = {**events[0], "event_id": f"late-{kind}"}
    late_record = json.dumps(late).encode()
    send_raw(bootstrap, topic, [late_record], key=late["user_id"].encode())
    dead = read_committed(
        bootstrap, dead_letter_topic,
        until=lambda rs: len(rs) >= len(bad) + 1, timeout_s=60, settle_s=2,
    )  # fmt: skip
    got_reasons = Counter((r.value, dict(r.headers)["rtml.reason"].decode()) for r in dead)
    want_reasons = Counter((bad[i], reason) for i, reason in reasons.items())
    want_reasons[(late_record, "late_event")] += 1
    assert got_reasons == want_reasons, kind
