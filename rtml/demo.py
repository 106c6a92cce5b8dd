"""`rtml demo smoke`: the smoke job on the local stack with generated data, and what it produced.

`rtml demo` (rtml/fraud_demo.py) runs the fraud pipeline; this one checks the stack end to end.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime

from jobs import smoke
from rtml import flinkrest, generate, kafka_admin
from rtml.kafka_io import last_event_ms, read_committed, send_raw
from rtml.settings import SmokeJobSettings, StackSettings
from rtml.stack import Stack

DEMO_EVENTS = 3000
EVENTS_PER_SECOND = 100  # of event time: 3000 events span 30 s, three 10 s windows
BAD_RECORDS = [b"this is not json", b'{"key": "k1"}', b'{"ts": 1}']


def _epoch_ms(iso_utc: str) -> int:
    return int(datetime.fromisoformat(iso_utc).replace(tzinfo=UTC).timestamp() * 1000)


def run() -> int:
    """Submit the smoke job (unless running), send events and bad records, print the results."""
    stack = Stack(StackSettings())
    settings = SmokeJobSettings()
    rest = flinkrest.FlinkRest(stack.settings.flink_rest_url)
    kafka_admin.ensure_topics(settings.kafka_bootstrap, smoke.topics(settings))
    job_id = rest.alive_job("rtml-smoke")
    if job_id is None:
        print("submitting the smoke job to the local Flink cluster ...", flush=True)
        job_id = stack.submit("smoke", detached=True)
        assert job_id is not None
        rest.wait_for_state(job_id, {"RUNNING"}, timeout_s=120)
    print(f"job {job_id} is running")

    # Earlier demo runs left windows in the output topic; count only what this run adds.
    already = len(
        read_committed(settings.kafka_bootstrap, settings.smoke_output_topic, timeout_s=5)
    )
    dead_before = len(
        read_committed(settings.kafka_bootstrap, settings.smoke_dead_letter_topic, timeout_s=3)
    )

    now_ms = int(time.time() * 1000)
    start_ms = now_ms - now_ms % 10_000 - 30_000  # three whole windows that ended just now
    last_ms = last_event_ms(settings.kafka_bootstrap, settings.smoke_input_topic)
    if last_ms is not None and last_ms >= start_ms:
        # An earlier run's events are newer: continue after them, or ours would all be late.
        start_ms = last_ms - last_ms % 10_000 + 10_000
    events = generate.smoke_events(
        DEMO_EVENTS, keys=5, start_ms=start_ms, events_per_second=EVENTS_PER_SECOND, seed=42
    )
    generate.produce(
        settings.kafka_bootstrap, settings.smoke_input_topic, generate.as_records(events)
    )
    send_raw(settings.kafka_bootstrap, settings.smoke_input_topic, BAD_RECORDS, key=b"bad")
    markers = generate.watermark_markers(start_ms + 45_000, settings.smoke_partitions)
    generate.produce(settings.kafka_bootstrap, settings.smoke_input_topic, markers)
    print(
        f"sent {len(events)} events, {len(BAD_RECORDS)} bad records and a watermark marker "
        "per partition (so the last windows fire)"
    )

    expected = generate.tumbling_counts(events, 10_000)
    print("waiting for the windows to be committed (checkpoint every 5 s) ...", flush=True)

    def all_windows_arrived(records: list) -> bool:
        seen = {
            (row["event_key"], _epoch_ms(row["window_start"]))
            for row in (json.loads(r.value) for r in records[already:])
        }
        return seen >= expected.keys()

    records = read_committed(
        settings.kafka_bootstrap, settings.smoke_output_topic,
        until=all_windows_arrived, timeout_s=90,
    )[already:]  # fmt: skip
    print(f"\n{'KEY':<6} {'WINDOW START (UTC)':<26} {'COUNT':>6}")
    # Only this run's windows: the markers' own windows fire in a later run.
    rows = [
        row
        for row in (json.loads(r.value) for r in records)
        if (row["event_key"], _epoch_ms(row["window_start"])) in expected
    ]
    rows.sort(key=lambda row: (row["window_start"], row["event_key"]))
    for row in rows:
        print(f"{row['event_key']:<6} {row['window_start']:<26} {row['event_count']:>6}")
    total = sum(row["event_count"] for row in rows)
    dead = read_committed(
        settings.kafka_bootstrap, settings.smoke_dead_letter_topic,
        until=lambda records: len(records) >= dead_before + len(BAD_RECORDS), timeout_s=30,
    )[dead_before:]  # fmt: skip
    reasons = Counter(dict(r.headers).get("rtml.reason", b"?").decode() for r in dead)
    print(f"\ncounted {total} of {len(events)} events in {len(rows)} window results")
    print(f"dead letters: {dict(reasons)}")
    print(
        "\nlook around:\n"
        f"  Flink web UI         {stack.settings.flink_rest_url}\n"
        "  jobs                 rtml jobs list\n"
        f"  window counts        rtml read {settings.smoke_output_topic}\n"
        f"  dead letters         rtml read {settings.smoke_dead_letter_topic}\n"
        "  stack                rtml stack status  |  rtml stack down"
    )
    if total != len(events) or len(dead) < len(BAD_RECORDS):
        print("rtml demo: the results are incomplete (see above)")
        return 1
    return 0
