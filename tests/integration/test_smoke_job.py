"""The smoke job on the real stack: exact counts, dead letters, and a TaskManager killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ephemeral import SETTLE_S, crash_taskmanager, run_rtml, wait_for_checkpoint_after

from rtml import generate, savepoints
from rtml.flinkrest import FlinkRest
from rtml.kafka_io import read_committed, send_raw
from rtml.settings import SmokeJobSettings
from rtml.stack import Stack

pytestmark = pytest.mark.integration

WINDOW_MS = 10_000
START_MS = 1_763_700_000_000  # a window boundary (divisible by 10 s)
PARTITIONS = SmokeJobSettings().smoke_partitions


def smoke_env(stack_env: dict[str, str]) -> dict[str, str]:
    """Topics, group and transactional ids of their own, so each test's job stands alone."""
    run = uuid.uuid4().hex[:8]
    return {
        **stack_env,
        "RTML_SMOKE_INPUT_TOPIC": f"smoke-{run}.events",
        "RTML_SMOKE_OUTPUT_TOPIC": f"smoke-{run}.counts",
        "RTML_SMOKE_DEAD_LETTER_TOPIC": f"smoke-{run}.dead-letter",
        "RTML_SMOKE_GROUP_ID": f"smoke-{run}",
        "RTML_SMOKE_TRANSACTIONAL_ID_PREFIX": f"smoke-{run}",
    }


def submit_smoke(env: dict[str, str], rest: FlinkRest) -> str:
    result = run_rtml(env, "submit", "smoke", "--detached", timeout=300)
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip().splitlines()[-1]
    rest.wait_for_state(job_id, {"RUNNING"}, timeout_s=120)
    return job_id


def count_rows(records: list) -> list[tuple[str, int, int]]:
    """(key, window_start_ms, count) for every output record, duplicates kept."""
    rows = []
    for record in records:
        value = json.loads(record.value)
        start = datetime.fromisoformat(value["window_start"]).replace(tzinfo=UTC)
        rows.append((value["event_key"], int(start.timestamp() * 1000), value["event_count"]))
    return rows


def expected_rows(events: list[dict[str, object]], fired_before_ms: int) -> Counter:
    """Each (key, window, count) the job must emit exactly once: windows that end by the flush."""
    counts = generate.tumbling_counts(events, WINDOW_MS)
    return Counter(
        (key, start, count)
        for (key, start), count in counts.items()
        if start + WINDOW_MS <= fired_before_ms
    )


def committed_windows(
    bootstrap: str, env: dict[str, str], expected: Counter, timeout_s: float, settle_s: float
) -> Counter:
    """The committed window results, read until as many as expected arrived (and a while more,
    so duplicates would be seen too)."""
    output = read_committed(
        bootstrap, env["RTML_SMOKE_OUTPUT_TOPIC"],
        until=lambda rs: len(rs) >= sum(expected.values()), timeout_s=timeout_s, settle_s=settle_s,
    )  # fmt: skip
    return Counter(count_rows(output))


def flush(bootstrap: str, topic: str, ts_ms: int) -> None:
    """Far-later events on every partition: the watermark passes and every earlier window fires."""
    generate.produce(bootstrap, topic, generate.watermark_markers(ts_ms, PARTITIONS))


def test_counts_are_exact_and_bad_records_become_dead_letters(
    stack: Stack, stack_env: dict[str, str], rest: FlinkRest
) -> None:
    env = smoke_env(stack_env)
    bootstrap = stack.settings.kafka_bootstrap
    job_id = submit_smoke(env, rest)
    try:
        events = generate.smoke_events(3000, keys=5, start_ms=START_MS, seed=7)  # 30 s, 3 windows
        bad = [
            b"not json at all",
            b'{"key": "k1"}',  # no event time
            b'{"key": "k1", "ts": "yesterday"}',  # event time of the wrong type
            b'{"ts": 1763700001000}',  # no key
            b"[1, 2, 3]",  # JSON, but not an object
            None,  # a tombstone (a key and no value)
        ]
        records = list(generate.as_records(events))
        # Bad records in the middle of good ones: they must not stop or shift the counting.
        half = len(records) // 2
        generate.produce(bootstrap, env["RTML_SMOKE_INPUT_TOPIC"], records[:half])
        send_raw(bootstrap, env["RTML_SMOKE_INPUT_TOPIC"], bad, key=b"k1")
        generate.produce(bootstrap, env["RTML_SMOKE_INPUT_TOPIC"], records[half:])
        flush_ts = START_MS + 60_000
        flush(bootstrap, env["RTML_SMOKE_INPUT_TOPIC"], flush_ts)
        expected = expected_rows(events, flush_ts - 2_000)
        assert sum(expected.values()) == 15  # 5 keys x 3 windows: the test itself is sound

        windows = committed_windows(bootstrap, env, expected, timeout_s=120, settle_s=SETTLE_S)
        assert windows == expected
        assert sum(count for _, _, count in windows) == len(events)

        # A late event: its window fired long ago, so it is dead-lettered, not silently dropped.
        late = json.dumps({"key": "k0", "ts": START_MS + 1}).encode()
        send_raw(bootstrap, env["RTML_SMOKE_INPUT_TOPIC"], [late], key=b"k0")

        dead = read_committed(
            bootstrap, env["RTML_SMOKE_DEAD_LETTER_TOPIC"],
            until=lambda rs: len(rs) >= len(bad) + 1, timeout_s=60, settle_s=3,
        )  # fmt: skip
        letters = [(r.value, dict(r.headers)) for r in dead]
        assert {r.key for r in dead} == {b"k1", b"k0"}  # the original keys are kept too
        reasons = {value: headers["rtml.reason"].decode() for value, headers in letters}
        assert reasons == {
            b"not json at all": "invalid_json",
            b'{"key": "k1"}': "missing_or_invalid_ts",
            b'{"key": "k1", "ts": "yesterday"}': "missing_or_invalid_ts",
            b'{"ts": 1763700001000}': "missing_key",
            b"[1, 2, 3]": "invalid_json",
            None: "empty_payload",
            late: "late_event",
        }
        for _, headers in letters:
            assert headers["rtml.source.topic"].decode() == env["RTML_SMOKE_INPUT_TOPIC"]
            assert int(headers["rtml.source.offset"]) >= 0
        # The Flink metric per reason (COUNT_DEAD_LETTER) counts exactly the dead letters written.
        per_reason = dict(Counter(reasons.values()))
        assert per_reason == {
            "invalid_json": 2, "missing_or_invalid_ts": 2, "missing_key": 1, "empty_payload": 1,
            "late_event": 1,
        }  # fmt: skip
        assert rest.wait_for_dead_letter_counts(job_id, per_reason) == per_reason
        assert rest.job(job_id)["state"] == "RUNNING"  # bad input never stopped the job
    finally:
        rest.cancel(job_id)


def test_killed_taskmanager_loses_and_duplicates_no_window(
    stack: Stack, stack_env: dict[str, str], rest: FlinkRest
) -> None:
    env = smoke_env(stack_env)
    bootstrap = stack.settings.kafka_bootstrap
    topic = env["RTML_SMOKE_INPUT_TOPIC"]
    job_id = submit_smoke(env, rest)
    try:
        events = generate.smoke_events(6000, keys=5, start_ms=START_MS, seed=11)  # 60 s
        records = list(generate.as_records(events))
        generate.produce(bootstrap, topic, records[:3000])
        # Windows of the first half fire and are committed by a checkpoint before the crash.
        flush(bootstrap, topic, START_MS + 30_000)
        sent_at_ms = int(time.time() * 1000)
        wait_for_checkpoint_after(rest, job_id, sent_at_ms)

        killed_at = crash_taskmanager(stack)

        # Data keeps arriving while the job is down; a replacement TaskManager is started.
        generate.produce(bootstrap, topic, records[3000:])
        flush_ts = START_MS + 120_000
        flush(bootstrap, topic, flush_ts)
        assert stack.up(["flink-taskmanager"]) == ["flink-taskmanager"]

        expected = expected_rows(events, flush_ts - 2_000)
        # The first markers (one per partition) have their own window [START+30 s, START+40 s).
        expected[("_watermark", START_MS + 30_000, PARTITIONS)] += 1
        windows = committed_windows(bootstrap, env, expected, timeout_s=240, settle_s=SETTLE_S)
        recovered_s = time.monotonic() - killed_at
        assert windows == expected, f"after {recovered_s:.0f} s"
        assert rest.job(job_id)["state"] == "RUNNING"
        print(f"recovered and caught up {recovered_s:.1f} s after kill -9 of the TaskManager")
    finally:
        rest.cancel(job_id)
        # Whatever happened, leave a TaskManager for the tests after this one.
        stack.up(["flink-taskmanager"])


def test_stop_with_savepoint_and_resubmit_keeps_window_state(
    stack: Stack, stack_env: dict[str, str], rest: FlinkRest
) -> None:
    env = smoke_env(stack_env)
    bootstrap = stack.settings.kafka_bootstrap
    topic = env["RTML_SMOKE_INPUT_TOPIC"]
    job_id = submit_smoke(env, rest)
    resumed_id = None
    try:
        events = generate.smoke_events(4000, keys=5, start_ms=START_MS, seed=5)  # 40 s
        records = list(generate.as_records(events))
        # Stop in the middle of the window [20 s, 30 s): its partial counts live only in state.
        generate.produce(bootstrap, topic, records[:2500])
        wait_for_checkpoint_after(rest, job_id, int(time.time() * 1000))

        stop = run_rtml(env, "jobs", "stop", job_id, "--savepoint", timeout=300)
        assert stop.returncode == 0, stop.stderr
        savepoint = stop.stdout.strip().splitlines()[-1]
        assert savepoint.startswith("file:"), stop.stdout
        assert rest.wait_for_state(job_id, {"FINISHED"}, timeout_s=60) == "FINISHED"

        generate.produce(bootstrap, topic, records[2500:])
        resubmit = run_rtml(
            env, "submit", "smoke", "--detached", "--from-savepoint", savepoint, timeout=300
        )
        assert resubmit.returncode == 0, resubmit.stderr
        resumed_id = resubmit.stdout.strip().splitlines()[-1]
        rest.wait_for_state(resumed_id, {"RUNNING"}, timeout_s=120)
        flush_ts = START_MS + 60_000
        flush(bootstrap, topic, flush_ts)

        expected = expected_rows(events, flush_ts - 2_000)
        windows = committed_windows(bootstrap, env, expected, timeout_s=120, settle_s=SETTLE_S)
        assert windows == expected
        # The cluster's changelog state backend restores in CLAIM mode, where the job deletes
        # what it restored from once replaced: rtml gave it a copy, the savepoint stays.
        restored = rest.checkpoints(resumed_id)["latest"]["restored"]["external_path"]
        assert restored.startswith(savepoint.rstrip("/") + "-claimed-")
        assert (savepoints.local_folder(savepoint) / "_metadata").is_file()
    finally:
        for job in (job_id, resumed_id):
            if job and rest.job(job)["state"] == "RUNNING":
                rest.cancel(job)


def test_runs_on_the_embedded_minicluster(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    env = smoke_env(stack_env)
    bootstrap = stack.settings.kafka_bootstrap
    topic = env["RTML_SMOKE_INPUT_TOPIC"]
    log = tmp_path / "job.log"
    with log.open("w") as output_file:
        job = subprocess.Popen(
            [sys.executable, "-m", "jobs.smoke"], env=env, stdout=output_file,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        events = generate.smoke_events(2000, keys=5, start_ms=START_MS, seed=3)
        # The job creates its topics when it starts; produce only then.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _topic_exists(bootstrap, topic):
            assert job.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        generate.produce(bootstrap, topic, generate.as_records(events))
        flush_ts = START_MS + 60_000
        flush(bootstrap, topic, flush_ts)
        expected = expected_rows(events, flush_ts - 2_000)
        windows = committed_windows(bootstrap, env, expected, timeout_s=180, settle_s=SETTLE_S)
        assert job.poll() is None, log.read_text()[-3000:]
        assert windows == expected
    finally:
        os.killpg(job.pid, signal.SIGTERM)
        try:
            job.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()


def _topic_exists(bootstrap: str, topic: str) -> bool:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return topic in admin.list_topics()
    finally:
        admin.close()
