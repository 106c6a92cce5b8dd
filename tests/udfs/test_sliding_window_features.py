"""SLIDING_WINDOW_FEATURES (udfs/java) on the embedded MiniCluster, against plain Python."""

from __future__ import annotations

import bisect
import json
import math
import statistics
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pyflink.table import StreamTableEnvironment
from pyflink.table.types import BigIntType

from rtml import flinkjob
from rtml.offline import offline_overrides
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
# Four kinds of item column: many values; few values and NULLs; the same strings as `merchant`
# (counted apart all the same); a BIGINT with NULLs.
ITEM_COLUMNS = ("merchant", "country", "device", "ipnum")


@dataclass(frozen=True)
class Event:
    """One generated row, by the same formulas as the SQL table below."""

    seq: int
    key: int
    ts: int
    amount: float | None
    items: tuple[str | int | None, ...]  # in the order of ITEM_COLUMNS


def event(seq: int, pause_ms: int) -> Event:
    ts = BASE_MS + seq * STEP_MS + (seq // BURST) * pause_ms
    amount = None if seq % 31 == 7 else ((seq * 37) % 1000) / 100.0
    items = (
        f"m{(seq * 7) % 23}",
        None if seq % 5 == 0 else f"c{(seq * 3) % 4}",
        f"m{(seq * 5) % 23}",
        None if seq % 7 == 3 else (seq * 11) % 97,
    )
    return Event(seq, seq % KEYS, ts, amount, items)


@pytest.fixture(scope="module")
def t_env() -> StreamTableEnvironment:
    return events_environment(None)


@pytest.fixture(scope="module")
def offline_t_env() -> StreamTableEnvironment:
    """As offline runs configure it: the windows on the function's heap, not in keyed state."""
    return events_environment(offline_overrides("heap"))


def events_environment(overrides: dict[str, str | None] | None) -> StreamTableEnvironment:
    env = flinkjob.table_environment(
        JobSettings(), "test-sliding-window-features", overrides=overrides
    )
    for name, pause_ms in PAUSES_MS.items():
        create_events_table(env, name.replace("-", "_"), pause_ms)
    return env


def create_events_table(env: StreamTableEnvironment, name: str, pause_ms: int) -> None:
    env.execute_sql(f"""
        CREATE TEMPORARY TABLE events_{name} (
          seq BIGINT,
          k AS seq % {KEYS},
          amount AS CASE WHEN seq % 31 = 7 THEN CAST(NULL AS DOUBLE)
                         ELSE CAST((seq * 37) % 1000 AS DOUBLE) / 100.0 END,
          merchant AS 'm' || CAST((seq * 7) % 23 AS STRING),
          country AS CASE WHEN seq % 5 = 0 THEN CAST(NULL AS STRING)
                          ELSE 'c' || CAST((seq * 3) % 4 AS STRING) END,
          device AS 'm' || CAST((seq * 5) % 23 AS STRING),
          ipnum AS CASE WHEN seq % 7 = 3 THEN CAST(NULL AS BIGINT) ELSE (seq * 11) % 97 END,
          event_time AS TO_TIMESTAMP_LTZ(
            {BASE_MS} + seq * {STEP_MS} + (seq / {BURST}) * {pause_ms}, 3),
          WATERMARK FOR event_time AS event_time - INTERVAL '1' SECOND
        ) WITH (
          'connector' = 'datagen', 'number-of-rows' = '{EVENTS}', 'rows-per-second' = '1000000',
          'fields.seq.kind' = 'sequence', 'fields.seq.start' = '0',
          'fields.seq.end' = '{EVENTS - 1}'
        )""")


# PyFlink's collect() cannot convert arrays holding NULLs (it fails with "EOFError: Ran out of
# input"), and converts other arrays element by element (2.5x slower than JSON for these rows);
# JSON_STRING carries every array, NULLs included, to Python instead.
ARRAYS = ("counts", "sums", "avgs", "mins", "maxs", "stddevs", "distincts", "item_counts")
FULL_ROW = "seq, " + ", ".join(f"JSON_STRING({name}) AS json_{name}" for name in ARRAYS)


def rows(
    t_env: StreamTableEnvironment,
    windows: str,
    table: str = "events_none",
    item_columns: str | None = ", ".join(ITEM_COLUMNS),
    select: str = FULL_ROW,
    cache_entries: int | None = None,
) -> Iterator[tuple]:
    """The function's rows; columns named `json_...` are JSON_STRING(...)s, decoded here.

    to_pandas() fetches Arrow batches (collect() makes Py4J calls per row: 5x slower here); it
    gives nullable BIGINTs as floats with NaN, turned back into ints and None.
    """
    items = "" if item_columns is None else f"item_columns => '{item_columns}',"
    cache = "" if cache_entries is None else f"cache_entries => {cache_entries},"
    result = t_env.sql_query(f"""
        SELECT {select}
        FROM SLIDING_WINDOW_FEATURES(
          input => TABLE {table} PARTITION BY k, value_column => 'amount', {items} {cache}
          windows => '{windows}', on_time => DESCRIPTOR(event_time))""")
    schema = result.get_schema()
    names = schema.get_field_names()
    integral = [isinstance(t, BigIntType) for t in schema.get_field_data_types()]
    for row in result.to_pandas().itertuples(index=False, name=None):
        yield tuple(
            _decode(name, value, is_integral)
            for name, value, is_integral in zip(names, row, integral, strict=True)
        )


def _decode(name: str, value: object, integral: bool) -> object:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if name.startswith("json_"):
        return json.loads(value)  # type: ignore[arg-type]
    return int(value) if integral else value  # type: ignore[call-overload]


def expected_items(window: list[Event], own: Event, column: int) -> tuple[int, int | None]:
    """(distinct non-NULL values, events holding this event's value or None) of one column."""
    values = [e.items[column] for e in window]
    mine = own.items[column]
    return len({v for v in values if v is not None}), None if mine is None else values.count(mine)


@pytest.mark.parametrize(
    ("pause", "windows", "cache_entries", "env"),
    [
        ("none", "1 s, 10 s, 1 min", None, "t_env"),
        ("shorter-windows-empty", "1 min, 1 s, 10 s", None, "t_env"),  # longest window first
        ("all-windows-empty", "10 s, 1 min, 1 s", None, "t_env"),
        # A key holds ~250 cache entries here: with room for about one key, each event finds
        # its key dropped and reads state, and keys that start over drop what was cached.
        ("all-windows-empty", "10 s, 1 min, 1 s", 300, "t_env"),
        ("shorter-windows-empty", "1 min, 1 s, 10 s", 0, "t_env"),  # no cache: state alone
        # Offline runs: every key's windows on the heap. Keys whose windows emptied before the
        # watermark are dropped (all-windows-empty), keys that pause for less are kept
        # (shorter-windows-empty: dropping them by a shorter window would give wrong counts).
        ("none", "1 s, 10 s, 1 min", None, "offline_t_env"),
        ("shorter-windows-empty", "1 min, 1 s, 10 s", None, "offline_t_env"),
        ("all-windows-empty", "10 s, 1 min, 1 s", 300, "offline_t_env"),
    ],
)
def test_every_window_of_every_event_equals_a_plain_python_computation(
    request: pytest.FixtureRequest,
    pause: str,
    windows: str,
    cache_entries: int | None,
    env: str,
) -> None:
    t_env: StreamTableEnvironment = request.getfixturevalue(env)
    pause_ms = PAUSES_MS[pause]
    lengths = [WINDOWS[name.strip()] for name in windows.split(",")]
    history: dict[int, list[Event]] = {}
    position: dict[int, int] = {}  # seq -> its index in its key's history
    for seq in range(EVENTS):
        e = event(seq, pause_ms)
        if e.amount is not None:  # a NULL value leaves the state untouched
            position[seq] = len(history.setdefault(e.key, []))
            history[e.key].append(e)
    times = {key: [e.ts for e in events] for key, events in history.items()}
    seen = nulls = 0
    evicted_item_values = False
    table = f"events_{pause.replace('-', '_')}"
    for row in rows(t_env, windows, table, cache_entries=cache_entries):
        seq = row[0]
        e = event(seq, pause_ms)
        seen += 1
        if e.amount is None:
            assert list(row[1:]) == [None] * 8, seq
            nulls += 1
            continue
        for w, length in enumerate(lengths):
            first = bisect.bisect_left(times[e.key], e.ts - length)  # window [t - length, t]
            window = history[e.key][first : position[seq] + 1]
            amounts = [x.amount for x in window]
            assert row[1][w] == len(window), (seq, w)
            assert math.isclose(row[2][w], sum(amounts), rel_tol=1e-12, abs_tol=1e-9), (seq, w)
            assert math.isclose(row[3][w], statistics.fmean(amounts), rel_tol=1e-12), (seq, w)
            assert (row[4][w], row[5][w]) == (min(amounts), max(amounts)), (seq, w)
            assert math.isclose(
                row[6][w], statistics.pstdev(amounts), rel_tol=1e-9, abs_tol=1e-9
            ), (seq, w)
            for i in range(len(ITEM_COLUMNS)):
                distinct, same = expected_items(window, e, i)
                assert row[7][i][w] == distinct, (seq, ITEM_COLUMNS[i], w)
                if same is None:
                    assert row[8][i] is None, (seq, ITEM_COLUMNS[i])
                else:
                    assert row[8][i][w] == same, (seq, ITEM_COLUMNS[i], w)
                # Some value left a window while still in a longer one: evictions were exercised.
                longer = history[e.key][: position[seq] + 1]
                if distinct < len({x.items[i] for x in longer if x.items[i] is not None}):
                    evicted_item_values = True
    assert seen == EVENTS
    assert nulls == sum(1 for seq in range(EVENTS) if seq % 31 == 7)
    assert evicted_item_values  # the test itself is sound


def test_without_item_columns_distincts_and_item_counts_are_empty(
    t_env: StreamTableEnvironment,
) -> None:
    select = (
        "seq, counts, JSON_STRING(distincts) AS json_d, JSON_STRING(item_counts) AS json_c, "
        "distincts[1] IS NULL, CARDINALITY(item_counts)"
    )
    got = list(rows(t_env, "1 s, 10 s", item_columns=None, select=select))
    assert len(got) == EVENTS
    valid = [row for row in got if row[1] is not None]
    assert valid
    for row in valid:
        assert (row[2], row[3], row[4], row[5]) == ([], [], True, 0), row[0]


def test_item_counts_in_sql_index_a_column_then_a_window(t_env: StreamTableEnvironment) -> None:
    """distincts[i][w] and item_counts[i][w] in SQL (1-based) are column i, window w."""
    select = "seq, distincts[2][1], distincts[2][2], item_counts[2][1], item_counts[2][2]"
    got = {row[0]: row[1:] for row in rows(t_env, "1 s, 10 s", select=select)}
    full = {row[0]: row for row in rows(t_env, "1 s, 10 s")}
    assert got.keys() == full.keys()
    for seq, (d1, d2, c1, c2) in got.items():
        row = full[seq]
        if row[7] is None:  # a NULL amount
            assert (d1, d2, c1, c2) == (None,) * 4
            continue
        assert (d1, d2) == (row[7][1][0], row[7][1][1]), seq
        country = row[8][1]
        assert (c1, c2) == ((None, None) if country is None else (country[0], country[1])), seq


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


@pytest.mark.parametrize(
    ("item_columns", "message"),
    [
        ("merchant, card", r"item_columns: 'card' not in \[seq, k, amount, merchant"),
        ("merchant, country, merchant", "'merchant' named twice"),
        ("merchant,,country", "empty column name"),
        ("merchant, country, device, ipnum, seq, k, amount, event_time, merchant2", "at most 8"),
    ],
)
def test_bad_item_columns_are_refused_with_the_reason(
    t_env: StreamTableEnvironment, item_columns: str, message: str
) -> None:
    with pytest.raises(Exception, match=message) as caught:
        list(rows(t_env, "1 s", item_columns=item_columns))
    # A wrong argument fails the same way every time: the job does not restart in a loop.
    assert "SuppressRestartsException" in str(caught.value)


def test_the_old_single_item_column_argument_is_refused(t_env: StreamTableEnvironment) -> None:
    # Flink 2.2 ignores undeclared named arguments: without this refusal an old query would run
    # and silently lose its distinct counts.
    result = t_env.execute_sql("""
        SELECT seq FROM SLIDING_WINDOW_FEATURES(
          input => TABLE events_none PARTITION BY k, value_column => 'amount',
          item_column => 'merchant', windows => '1 s', on_time => DESCRIPTOR(event_time))""")
    expected = pytest.raises(Exception, match="item_column was replaced by item_columns")
    with expected as caught, result.collect() as results:
        list(results)
    assert "SuppressRestartsException" in str(caught.value)


def test_a_negative_cache_size_is_refused(t_env: StreamTableEnvironment) -> None:
    refused = pytest.raises(Exception, match="cache_entries must be 0 .no cache. or more, not -1")
    with refused as caught:
        list(rows(t_env, "1 s", cache_entries=-1))
    assert "SuppressRestartsException" in str(caught.value)
