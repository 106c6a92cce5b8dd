"""Editing a feature set on the real stack: stop with a savepoint, edit the SQL, resume.

An edit after the windows keeps their state; an edit of the windows is refused by name before
Flink restores anything; --backfill rebuilds the new windows from the source topic's history.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from ephemeral import private_featureset, run_rtml

from rtml import generate, kafka_admin, statecheck
from rtml.flinkrest import FlinkRest
from rtml.generators import GENERATORS, as_records
from rtml.kafka_io import read_committed
from rtml.stack import Stack

pytestmark = pytest.mark.integration

START_MS = 1_763_700_000_000
WINDOWS = "'1 min, 5 min, 1 h, 24 h'"
PTF_CALL = "\nFROM SLIDING_WINDOW_FEATURES("


def edit_query(folder: Path, old: str, new: str) -> None:
    query = folder / "features" / "fraud_card.sql"
    text = query.read_text()
    assert old in text, f"{old!r} is not in {query}"
    query.write_text(text.replace(old, new))


def features_rows(bootstrap: str, topic: str, count: int, timeout_s: float = 180) -> list[dict]:
    """At least `count` committed feature rows (all that are there once that many are)."""
    records = read_committed(
        bootstrap, topic, until=lambda rs: len(rs) >= count, timeout_s=timeout_s, settle_s=2
    )
    rows = [json.loads(r.value) for r in records]
    assert len(rows) >= count, f"{len(rows)} of {count} feature rows on {topic}"
    return rows


def submit(env: dict[str, str], name: str, *options: str) -> str:
    submitted = run_rtml(env, "submit", "features", name, "--detached", *options, timeout=300)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    return submitted.stdout.strip().splitlines()[-1]


def stop_with_savepoint(env: dict[str, str], rest: FlinkRest, job_id: str) -> str:
    for _ in range(60):  # a savepoint needs the job's tasks running
        if rest.checkpoints(job_id).get("counts", {}).get("completed", 0) >= 1:
            break
        time.sleep(1)
    stopped = run_rtml(env, "jobs", "stop", job_id, "--savepoint", timeout=300)
    assert stopped.returncode == 0, stopped.stderr
    return stopped.stdout.strip().splitlines()[-1]


def test_edit_keeps_state_refuses_incompatible_windows_and_backfills(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    name, definition, own_env = private_featureset(tmp_path, "fraud_card")
    env = {**stack_env, **own_env}
    bootstrap = stack.settings.kafka_bootstrap
    source, features = definition["source"]["topic"], definition["features_topic"]
    rest = FlinkRest(stack.settings.flink_rest_url)
    fraud = GENERATORS["fraud"]
    events = fraud.generate(900, seed=5, start_ms=START_MS, rate=100.0)
    first, second, third = events[:400], events[400:700], events[700:]
    kafka_admin.ensure_topics(bootstrap, {source: 2, features: 2})
    generate.produce(bootstrap, source, as_records(first, fraud.key_of))

    job_id = submit(env, name)
    features_rows(bootstrap, features, len(first))
    savepoint = stop_with_savepoint(env, rest, job_id)
    saved = statecheck.read_saved(savepoint)
    assert saved is not None and saved.featureset == name
    assert "SLIDING_WINDOW_FEATURES" in saved.operators

    # A derived column after the windows: the state is kept, counts go on from the savepoint.
    edit_query(tmp_path, PTF_CALL, ",\n  counts[4] * 2 AS tx_count_24h_doubled" + PTF_CALL)
    job_id = submit(env, name, "--from-savepoint", savepoint)
    generate.produce(bootstrap, source, as_records(second, fraud.key_of))
    rows = features_rows(bootstrap, features, len(first) + len(second))
    # Restored from rtml's copy of the savepoint, in CLAIM mode (the changelog state backend's):
    # Flink counts a claimed savepoint as a checkpoint of the job.
    restored = rest.checkpoints(job_id)["latest"]["restored"]
    assert restored["external_path"].startswith(savepoint.rstrip("/") + "-claimed-"), restored
    assert statecheck.read_saved(savepoint) == saved  # the savepoint itself stays
    seen: Counter[str] = Counter(e["card_id"] for e in first)
    for event in second:
        seen[event["card_id"]] += 1
        (row,) = [r for r in rows if r["event_id"] == event["event_id"]]
        assert row["tx_count_24h"] == seen[event["card_id"]], "state lost across the savepoint"
        assert row["tx_count_24h_doubled"] == 2 * row["tx_count_24h"]
    savepoint = stop_with_savepoint(env, rest, job_id)

    # Other windows: refused before Flink restores anything, naming the feature set.
    edit_query(tmp_path, WINDOWS, "'2 min, 5 min, 1 h, 24 h'")
    jobs_before = {j.job_id for j in rest.jobs()}
    refused = run_rtml(
        env, "submit", "features", name, "--detached", "--from-savepoint", savepoint, timeout=300
    )
    assert refused.returncode != 0
    message = refused.stdout + refused.stderr
    assert f"feature set '{name}'" in message
    assert "SLIDING_WINDOW_FEATURES changed" in message
    assert "'2 min, 5 min, 1 h, 24 h'" in message and "--backfill" in message
    assert {j.job_id for j in rest.jobs()} == jobs_before, "a job was started anyway"

    # --backfill: empty windows, rebuilt from the topic's history (the longest window, 24 h).
    job_id = submit(env, name, "--backfill")
    try:
        generate.produce(bootstrap, source, as_records(third, fraud.key_of))
        rows = features_rows(bootstrap, features, 2 * len(first) + 2 * len(second) + len(third))
        seen = Counter(e["card_id"] for e in first + second)
        for event in third:
            seen[event["card_id"]] += 1
            newest = [r for r in rows if r["event_id"] == event["event_id"]]
            assert newest and all(r["tx_count_24h"] == seen[event["card_id"]] for r in newest)
    finally:
        rest.cancel(job_id)
        rest.wait_for_state(job_id, {"CANCELED", "FAILED", "FINISHED"}, timeout_s=120)
