"""Bounded Kafka ranges: parsing, warm-up and resolution against a fake broker (no services)."""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pytest

from rtml import featuresets
from rtml.offline import (
    HEAP_WINDOWS_PARAMETER,
    KafkaRange,
    RangeError,
    format_time,
    longest_window_ms,
    offline_overrides,
    parse_offsets,
    parse_time,
    prefer_throughput_gc,
    records_read,
    resolve,
    split_rows,
)
from rtml.settings import PROJECT_ROOT

MIN = 60_000
HOUR = 60 * MIN
T0 = 1_795_000_000_000


@dataclass
class FakeBroker:
    """A topic as lists of record timestamps per partition; offsets below `deleted` are gone."""

    timestamps: dict[int, list[int]]
    deleted: dict[int, int] = field(default_factory=dict)
    groups: dict[str, dict[int, int | None]] = field(default_factory=dict)

    def partitions(self) -> list[int]:
        return sorted(self.timestamps)

    def log_start(self) -> dict[int, int]:
        return {p: self.deleted.get(p, 0) for p in self.timestamps}

    def log_end(self) -> dict[int, int]:
        return {p: len(ts) for p, ts in self.timestamps.items()}

    def offsets_for_time(self, ts_ms: int) -> dict[int, int | None]:
        found: dict[int, int | None] = {}
        for p, stamps in self.timestamps.items():
            offset = max(bisect.bisect_left(stamps, ts_ms), self.deleted.get(p, 0))
            found[p] = offset if offset < len(stamps) else None
        return found

    def timestamp_at(self, partition: int, offset: int) -> int:
        return self.timestamps[partition][offset]

    def committed(self, group: str) -> dict[int, int | None]:
        return self.groups.get(group, {})


def minutes(*values: int) -> list[int]:
    return [T0 + v * MIN for v in values]


# partition 0: one record a minute for 3 h; partition 1: one every 2 min; partition 2: empty
BROKER = FakeBroker({0: minutes(*range(180)), 1: minutes(*range(0, 180, 2)), 2: []})


def test_parse_time_accepts_iso_and_epoch_ms() -> None:
    assert parse_time("2026-11-01T00:00") == 1_793_491_200_000  # naive means UTC
    assert parse_time("2026-11-01T01:00+01:00") == 1_793_491_200_000
    assert parse_time("2026-11-01T00:00:00Z") == 1_793_491_200_000
    assert parse_time("1793491200000") == 1_793_491_200_000
    assert format_time(1_793_491_200_000) == "2026-11-01T00:00:00.000Z"
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_time("yesterday")


def test_parse_offsets() -> None:
    assert parse_offsets("0:100-500, 1:250") == ({0: 100, 1: 250}, {0: 500})
    with pytest.raises(ValueError, match="PARTITION:START"):
        parse_offsets("0-100")
    with pytest.raises(ValueError, match="twice"):
        parse_offsets("0:1,0:2")
    with pytest.raises(ValueError, match="end 5 < start 10"):
        parse_offsets("0:10-5")


def test_range_from_command_line_options() -> None:
    assert KafkaRange.from_options() == KafkaRange.everything()
    by_time = KafkaRange.from_options("2026-11-01T00:00", "2026-11-01T01:00")
    assert (by_time.kind, by_time.to_ms - by_time.from_ms) == ("time", HOUR)
    assert KafkaRange.from_options(offsets="0:5").start_offsets == {0: 5}
    assert KafkaRange.from_options(group="g", to="1793491200000").to_ms == 1_793_491_200_000
    for bad, message in [
        ({"offsets": "0:5", "from_": "2026-11-01T00:00"}, "cannot be combined"),
        ({"group": "g", "from_": "2026-11-01T00:00"}, "drop --from"),
        ({"to": "2026-11-01T00:00"}, "--to needs"),
        ({"from_": "2026-11-01T01:00", "to": "2026-11-01T00:00"}, "empty range"),
    ]:
        with pytest.raises(RangeError, match=message):
            KafkaRange.from_options(**bad)


def test_longest_window_is_read_from_the_query() -> None:
    query = featuresets.load("fraud_card").query.read_text()
    assert longest_window_ms(query) == 24 * HOUR
    assert longest_window_ms("SELECT ... windows => '30 seconds, 2 minutes'") == 2 * MIN
    over = "COUNT(*) OVER (PARTITION BY k ORDER BY t RANGE BETWEEN INTERVAL '10' MINUTE PRECEDING"
    assert longest_window_ms(over) == 10 * MIN
    assert longest_window_ms("-- windows => '2 d'\nSELECT a FROM b") is None  # comments ignored
    with pytest.raises(RangeError, match="not a length"):
        longest_window_ms("windows => '5 fortnights'")


def test_time_range_starts_a_warm_up_earlier_and_ends_after_the_slack() -> None:
    resolved = resolve(
        KafkaRange.by_time(T0 + 100 * MIN, T0 + 120 * MIN), BROKER,
        topic="t", warm_up_ms=30 * MIN, slack_ms=2 * MIN,
    )  # fmt: skip
    assert resolved.first == {0: 100, 1: 50, 2: 0}
    assert resolved.start == {0: 68, 1: 34, 2: 0}  # from - 30 min window - 2 min slack
    assert resolved.end == {0: 122, 1: 61, 2: 0}  # to + 2 min slack, exclusive
    assert (resolved.from_ms, resolved.to_ms) == (T0 + 100 * MIN, T0 + 120 * MIN)
    assert (
        resolved.start_option()
        == "partition:0,offset:68;partition:1,offset:34;partition:2,offset:0"
    )
    assert (
        resolved.end_option() == "partition:0,offset:122;partition:1,offset:61;partition:2,offset:0"
    )
    assert resolved.warnings == ()


def test_open_ended_time_range_reads_to_the_end() -> None:
    resolved = resolve(KafkaRange.by_time(T0 + 170 * MIN), BROKER, topic="t", warm_up_ms=0)
    assert resolved.end == {0: 180, 1: 90, 2: 0}
    assert resolved.offsets_in_range == 10 + 5


def test_whole_topic() -> None:
    resolved = resolve(KafkaRange.everything(), BROKER, topic="t", warm_up_ms=HOUR)
    assert (resolved.start, resolved.end) == ({0: 0, 1: 0, 2: 0}, {0: 180, 1: 90, 2: 0})
    assert resolved.from_ms is None and resolved.warm_up_ms == 0


def test_empty_range_and_range_beyond_the_end_are_clear_errors() -> None:
    gaps = FakeBroker({0: minutes(0, 1, 50, 51)})
    with pytest.raises(RangeError, match="empty range: no record of topic t between"):
        resolve(KafkaRange.by_time(T0 + 10 * MIN, T0 + 20 * MIN), gaps, topic="t", warm_up_ms=0)
    with pytest.raises(
        RangeError, match="beyond the end of topic t: --from .* is after its newest"
    ):
        resolve(KafkaRange.by_time(T0 + 500 * MIN), BROKER, topic="t", warm_up_ms=0)
    with pytest.raises(RangeError, match="has no records"):
        resolve(KafkaRange.everything(), FakeBroker({0: [], 1: []}), topic="t", warm_up_ms=0)
    with pytest.raises(RangeError, match="does not exist"):
        resolve(KafkaRange.everything(), FakeBroker({}), topic="t", warm_up_ms=0)


def test_offsets_range() -> None:
    resolved = resolve(
        KafkaRange.by_offsets({0: 100, 1: 50}, {0: 110}), BROKER, topic="t", warm_up_ms=10 * MIN
    )
    assert resolved.first == {0: 100, 1: 50, 2: 0}
    assert resolved.end == {0: 110, 1: 90, 2: 0}
    assert resolved.from_ms == T0 + 100 * MIN  # the oldest first record of the range
    assert resolved.start == {0: 90, 1: 45, 2: 0}
    # a partition not named is not read
    only_one = resolve(KafkaRange.by_offsets({1: 10}), BROKER, topic="t", warm_up_ms=0)
    assert only_one.start[0] == only_one.end[0] == 180


def test_offsets_errors() -> None:
    deleted = FakeBroker({0: minutes(*range(100))}, deleted={0: 40})
    with pytest.raises(RangeError, match="offset 10 was deleted .* the log starts at 40"):
        resolve(KafkaRange.by_offsets({0: 10}), deleted, topic="t", warm_up_ms=0)
    with pytest.raises(
        RangeError, match="beyond the end of topic t: partition 0 ends at offset 180"
    ):
        resolve(KafkaRange.by_offsets({0: 100}, {0: 181}), BROKER, topic="t", warm_up_ms=0)
    with pytest.raises(RangeError, match="beyond the end .* not 200"):
        resolve(KafkaRange.by_offsets({0: 200}), BROKER, topic="t", warm_up_ms=0)
    with pytest.raises(RangeError, match="no partition \\[7\\]"):
        resolve(KafkaRange.by_offsets({7: 0}), BROKER, topic="t", warm_up_ms=0)
    with pytest.raises(RangeError, match="empty range"):
        resolve(KafkaRange.by_offsets({0: 180, 1: 90}), BROKER, topic="t", warm_up_ms=0)


def test_deleted_records_inside_a_time_range_fail_and_a_short_warm_up_warns() -> None:
    deleted = FakeBroker({0: minutes(*range(100))}, deleted={0: 40})
    with pytest.raises(RangeError, match="records before offset 40 were deleted"):
        resolve(KafkaRange.by_time(T0 + 30 * MIN), deleted, topic="t", warm_up_ms=0)
    resolved = resolve(KafkaRange.by_time(T0 + 50 * MIN), deleted, topic="t", warm_up_ms=HOUR)
    assert resolved.start == {0: 40}
    assert "warm-up starts at" in resolved.warnings[0]


def test_group_range() -> None:
    broker = FakeBroker(BROKER.timestamps, groups={"g": {0: 170, 1: 85, 2: 0}, "half": {0: 1}})
    resolved = resolve(KafkaRange.from_group("g"), broker, topic="t", warm_up_ms=5 * MIN)
    assert resolved.first == {0: 170, 1: 85, 2: 0}
    assert resolved.end == {0: 180, 1: 90, 2: 0}
    assert resolved.start == {0: 165, 1: 83, 2: 0}
    upto = resolve(KafkaRange.from_group("g", T0 + 175 * MIN), broker, topic="t", warm_up_ms=0)
    assert upto.end == {0: 175, 1: 88, 2: 0}
    with pytest.raises(RangeError, match="'nobody' has no committed offsets"):
        resolve(KafkaRange.from_group("nobody"), broker, topic="t", warm_up_ms=0)
    with pytest.raises(RangeError, match="no committed offset for partitions \\[1, 2\\]"):
        resolve(KafkaRange.from_group("half"), broker, topic="t", warm_up_ms=0)


def test_records_read_counts_from_the_start_offsets_per_partition() -> None:
    start = {0: 100, 1: 0, 2: 5}
    assert records_read(start, {}) == 0  # nothing committed yet
    assert records_read(start, {0: 150, 1: None, 2: 5}) == 50
    assert records_read(start, {0: 160, 1: 7, 2: 9}) == 60 + 7 + 4
    assert records_read(start, {0: 90}) == 0  # an offset before the start counts nothing


# -- collecting a run's rows (the embedded MiniCluster, no services) -------------------------------


def _typed_again(frame: pd.DataFrame, names: list[str], types: list) -> pd.DataFrame:
    """What `Table.to_pandas()` gives, integer and boolean columns typed again as offline runs
    give them (int64 and bool, pandas' nullable Int64 and boolean where a value is missing)."""
    from pyflink.table.types import BigIntType, BooleanType, IntType, SmallIntType, TinyIntType

    out = frame.copy()
    for name, flink_type in zip(names, types, strict=True):
        column = out[name]
        if isinstance(flink_type, BigIntType | IntType | SmallIntType | TinyIntType):
            out[name] = column.astype("int64") if column.notna().all() else column.astype("Int64")
        elif isinstance(flink_type, BooleanType):
            out[name] = column.astype("bool") if column.notna().all() else column.astype("boolean")
    return out


def test_collect_gives_what_to_pandas_gives_for_every_column_kind() -> None:
    """`_collect` (filesystem sink, JSON lines, pyarrow) in place of `Table.to_pandas()`: the
    same frame, dtypes included, for strings, integers, doubles that print long, booleans, both
    timestamp kinds and NULLs of each (a whole-NULL column too), except that integers beyond
    2**53 in a column with NULLs stay exact."""
    import pandas as pd

    from rtml import flinkjob
    from rtml.offline import _collect, arrow_to_pandas
    from rtml.settings import FeatureJobSettings

    t_env = flinkjob.table_environment(FeatureJobSettings(), "offline-collect-test")
    table = t_env.sql_query(
        """
        SELECT name, n, small, x, flag, at_ltz, at_plain, nothing FROM (VALUES
          ('a', CAST(1 AS BIGINT), 7, CAST(0.1 AS DOUBLE) + CAST(0.2 AS DOUBLE), TRUE,
           TO_TIMESTAMP_LTZ(1796355754748, 3), TIMESTAMP '2026-12-04 03:42:34.748',
           CAST(NULL AS STRING)),
          ('b "quoted", ü', CAST(-9007199254740993 AS BIGINT), CAST(NULL AS INT),
           CAST(1e300 AS DOUBLE) / 3, CAST(NULL AS BOOLEAN), CAST(NULL AS TIMESTAMP_LTZ(3)),
           CAST(NULL AS TIMESTAMP(3)), CAST(NULL AS STRING)),
          (CAST(NULL AS STRING), CAST(NULL AS BIGINT), -3, CAST(NULL AS DOUBLE), FALSE,
           TO_TIMESTAMP_LTZ(0, 3), TIMESTAMP '1999-12-31 23:59:59.999', CAST(NULL AS STRING))
        ) AS t(name, n, small, x, flag, at_ltz, at_plain, nothing)
        """
    )
    schema = table.get_schema()
    names, types = schema.get_field_names(), schema.get_field_data_types()

    def ordered(frame: pd.DataFrame) -> pd.DataFrame:  # VALUES rows come in no fixed order
        # to_pandas' timestamp unit varies (ms here, us in a feature run); _collect's is us
        for name in ("at_ltz", "at_plain"):
            frame[name] = frame[name].dt.as_unit("us")
        return frame.sort_values("small", na_position="first").reset_index(drop=True)

    expected = ordered(_typed_again(table.to_pandas(), names, types))
    timezone = str(t_env.get_config().get_local_timezone())
    collected = ordered(arrow_to_pandas(_collect(t_env, table), names, types, timezone))
    # to_pandas rounds an integer column with a NULL through float64: -2**53 - 1 became -2**53
    assert expected["n"].tolist()[0] == -9007199254740992
    pd.testing.assert_frame_equal(
        collected.drop(columns="n"), expected.drop(columns="n"), check_exact=True
    )
    # rows by `small`: NULL ('b ...'), -3 (the NULL name), 7 ('a'); not only equal to each other:
    assert collected["x"].tolist()[::2] == [1e300 / 3, 0.1 + 0.2]
    assert collected["n"].tolist()[::2] == [-9007199254740993, 1]  # beyond a double's 2**53
    assert collected["name"].tolist()[0] == 'b "quoted", ü'
    assert collected["at_ltz"].tolist()[1:] == [
        pd.Timestamp(0, unit="ms", tz="UTC"),
        pd.Timestamp(1796355754748, unit="ms", tz="UTC"),
    ]


def test_offline_runs_turn_on_the_window_functions_heap_state_by_its_java_name() -> None:
    java = PROJECT_ROOT / "udfs/java/src/main/java/dev/rtml/udfs/HeapWindows.java"
    match = re.search(r'static final String JOB_PARAMETER = "([^"]+)";', java.read_text())
    assert match, "JOB_PARAMETER not found in HeapWindows.java"
    assert match[1] == HEAP_WINDOWS_PARAMETER
    heap = offline_overrides("heap")
    assert heap["pipeline.global-job-parameters"] == f"{match[1]}:true"
    assert heap["state.backend.type"] == "hashmap"
    rocksdb = offline_overrides("rocksdb")
    assert "pipeline.global-job-parameters" not in rocksdb
    assert rocksdb["state.backend.type"] == "rocksdb"
    for overrides in (heap, rocksdb):  # never a checkpoint, never a restart
        assert overrides["execution.checkpointing.interval"] is None
        assert overrides["restart-strategy.type"] == "none"
        # the profile logs state changes for checkpoints; without checkpoints that is pure cost
        assert overrides["state.changelog.enabled"] == "false"


def test_offline_runs_ask_for_the_parallel_collector_only_for_a_jvm_not_yet_started() -> None:
    environ: dict[str, str] = {}
    assert prefer_throughput_gc(environ, jvm_running=False)
    assert environ == {"JVM_ARGS": "-XX:+UseParallelGC"}
    other = {"JVM_ARGS": "-Xmx8g"}  # kept, the collector added
    assert prefer_throughput_gc(other, jvm_running=False)
    assert other == {"JVM_ARGS": "-Xmx8g -XX:+UseParallelGC"}
    chosen = {"JVM_ARGS": "-XX:+UseZGC -Xmx8g"}  # the user's collector stays
    assert not prefer_throughput_gc(chosen, jvm_running=False)
    assert chosen == {"JVM_ARGS": "-XX:+UseZGC -Xmx8g"}
    running: dict[str, str] = {}  # a JVM already runs in this process: too late to ask
    assert not prefer_throughput_gc(running, jvm_running=True)
    assert running == {}


def test_a_runs_union_splits_into_rows_in_event_time_order_and_dead_letters_by_offset() -> None:
    """Feature rows by event time (ties in the order read), typed without the union's NULLs;
    dead letters by partition and offset."""
    from pyflink.table import DataTypes

    null = None
    table = pa.table(
        {
            "id": ["c", "a", null, "b", "d", null],
            "t": [30, 10, null, 30, 20, null],
            "at": ["1970-01-01T00:00:00.030Z", "1970-01-01T00:00:00.010Z", null,
                   "1970-01-01T00:00:00.030Z", "1970-01-01T00:00:00.020Z", null],
            "flag": [True, False, null, True, False, null],
            "maybe": [1, null, null, 2, 3, null],
            "reason": [null, null, "invalid_json", null, null, "late"],
            "source_partition": [null, null, 1, null, null, 0],
            "source_offset": [null, null, 5, null, null, 9],
        },
        schema=pa.schema([("id", pa.string()), ("t", pa.int64()), ("at", pa.string()),
                          ("flag", pa.bool_()), ("maybe", pa.int64()), ("reason", pa.string()),
                          ("source_partition", pa.int64()), ("source_offset", pa.int64())]),
    )  # fmt: skip
    names = ["id", "t", "at", "flag", "maybe"]
    types = [DataTypes.STRING(), DataTypes.BIGINT(), DataTypes.TIMESTAMP_LTZ(3),
             DataTypes.BOOLEAN(), DataTypes.BIGINT()]  # fmt: skip
    rows, dead = split_rows(table, names, types, "Europe/Berlin", "t")

    assert rows["id"].tolist() == ["a", "d", "c", "b"]  # 10, 20, 30, 30: c read before b
    assert rows["t"].dtype == "int64" and rows["flag"].dtype == bool
    assert rows["maybe"].dtype == "Int64" and rows["maybe"].isna().tolist() == [1, 0, 0, 0]
    assert str(rows["at"].dtype) == "datetime64[us, Europe/Berlin]"
    assert rows["at"].tolist()[0] == pd.Timestamp(10, unit="ms", tz="UTC")
    assert list(rows.index) == [0, 1, 2, 3]
    assert dead.to_dict("list") == {
        "reason": ["late", "invalid_json"], "source_partition": [0, 1], "source_offset": [9, 5],
    }  # fmt: skip
    assert dead["source_offset"].dtype == "int64"
