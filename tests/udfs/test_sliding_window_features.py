"""SLIDING_WINDOW_FEATURES (udfs/java) on the embedded MiniCluster, against plain Python."""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Iterator

import pytest
from pyflink.table import StreamTableEnvironment

from rtml import flinkjob
from rtml.settings import JobSettings

BASE_MS = 1_763_700_000_000
EVENTS = 3000
KEYS = 4
STEP_MS = 13  # 3000 events span 39 s of steady traffic ...
BURST = 750  # ... with a pause after every 750 events
WINDOWS = {"1 s": 1_000, "10 s": 10_000, "1 min": 60_000}
PAUSES_MS = {
    "none": 0,
    "shorter-windows-empty": 30_000,  # the 1 s and 10 s windows empty out, 1 min does not
    "all-windows-empty": 90_000,  # the key starts over
}


def event(seq: int, pause_ms: int) -> tuple[int, int, float, str]:
    """(key, ts_ms, amount, merchant) of event `seq`, the same formulas as the SQL below."""
    ts = BASE_MS + seq * STEP_MS + (seq // BURST) * pause_ms
    return seq % KEYS, ts, ((seq * 37) % 1000) / 100.0, f"m{(seq * 7) % 23}"


@pytest.fixture(scope="module")
def t_env() -> StreamTableEnvironment:
    env = flinkjob.table_environment(JobSettings(), "test-sliding-window-features")
    for name, pause_ms in PAUSES_MS.items():
        create_events_table(env, name.replace("-", "_"), pause_ms)
    return env


def create_events_table(env: StreamTableEnvironment, name: str, pause_ms: int) -> None:
    env.execute_sql(f"""
        CREATE TEMPORARY TABLE events_{name} (
          seq BIGINT,
          k AS seq % {KEYS},
          amount AS CAST((seq * 37) % 1000 AS DOUBLE) / 100.0,
          merchant AS 'm' || CAST((seq * 7) % 23 AS STRING),
          event_time AS TO_TIMESTAMP_LTZ(
            {BASE_MS} + seq * {STEP_MS} + (seq / {BURST}) * {pause_ms}, 3),
          WATERMARK FOR event_time AS event_time - INTERVAL '1' SECOND
        ) WITH (
          'connector' = 'datagen', 'number-of-rows' = '{EVENTS}', 'rows-per-second' = '1000000',
          'fields.seq.kind' = 'sequence', 'fields.seq.start' = '0',
          'fields.seq.end' = '{EVENTS - 1}'
        )""")


def rows(t_env: StreamTableEnvironment, windows: str, table: str = "events_none") -> Iterator:
    result = t_env.execute_sql(f"""
        SELECT seq, counts, sums, avgs, mins, maxs, stddevs, distincts
        FROM SLIDING_WINDOW_FEATURES(
          input => TABLE {table} PARTITION BY k, value_column => 'amount',
          item_column => 'merchant', windows => '{windows}', on_time => DESCRIPTOR(event_time))""")
    with result.collect() as results:
        yield from results


@pytest.mark.parametrize(
    ("pause", "windows"),
    [
        ("none", "1 s, 10 s, 1 min"),
        ("shorter-windows-empty", "1 min, 1 s, 10 s"),  # the longest window first
        ("all-windows-empty", "10 s, 1 min, 1 s"),
    ],
)
def test_every_window_of_every_event_equals_a_plain_python_computation(
    t_env: StreamTableEnvironment, pause: str, windows: str
) -> None:
    pause_ms = PAUSES_MS[pause]
    lengths = [WINDOWS[name.strip()] for name in windows.split(",")]
    history: dict[int, list[tuple[int, int, float, str]]] = {}
    for seq in range(EVENTS):
        history.setdefault(seq % KEYS, []).append(event(seq, pause_ms))
    times = {key: [ts for _, ts, _, _ in events] for key, events in history.items()}
    seen = 0
    for row in rows(t_env, windows, f"events_{pause.replace('-', '_')}"):
        seq = row[0]
        key, ts, _, _ = event(seq, pause_ms)
        position = seq // KEYS  # events of a key are every KEYS-th seq
        for w, length in enumerate(lengths):
            first = bisect.bisect_left(times[key], ts - length)  # window [t - length, t]
            window = history[key][first : position + 1]
            amounts = [amount for _, _, amount, _ in window]
            assert row[1][w] == len(window), (seq, w)
            assert math.isclose(row[2][w], sum(amounts), rel_tol=1e-12, abs_tol=1e-9), (seq, w)
            assert math.isclose(row[3][w], statistics.fmean(amounts), rel_tol=1e-12), (seq, w)
            assert (row[4][w], row[5][w]) == (min(amounts), max(amounts)), (seq, w)
            assert math.isclose(
                row[6][w], statistics.pstdev(amounts), rel_tol=1e-9, abs_tol=1e-9
            ), (seq, w)
            assert row[7][w] == len({merchant for *_, merchant in window}), (seq, w)
        seen += 1
    assert seen == EVENTS


@pytest.mark.parametrize(
    ("windows", "message"),
    [
        ("5 fortnights", "unknown unit 'fortnights'"),
        ("2 d", "longer than the maximum of 24 h"),
        ("min", "expected e.g. '5 min'"),
    ],
)
def test_bad_window_lists_are_refused_with_the_reason(
    t_env: StreamTableEnvironment, windows: str, message: str
) -> None:
    with pytest.raises(Exception, match=message):
        list(rows(t_env, windows))
