"""A feature set's own SQL over a bounded Kafka range, on the embedded MiniCluster (offline runs).

Training sets and backtests need the features the live job would have computed for a slice of
history. `compute_features` runs the same source SQL and query as `jobs.features` (unchanged) with
the shared source `raw_events` turned into a bounded read (`sql/common/bounded_range.sql`), and
collects the feature rows into a pandas DataFrame:

    range_ = KafkaRange.by_time(parse_time("2026-11-01T00:00"), parse_time("2026-11-02T00:00"))
    result = compute_features(featuresets.load("fraud_card"), range_, FeatureJobSettings())
    result.rows            # one row per event in the range, the query's columns
    result.dead_letters    # reason, source_partition, source_offset of every bad record read

A range is given by time, by offsets per partition, by a consumer group's committed offsets, or
is the whole topic. `resolve` turns it into start and end offsets per partition against the broker
(pure logic over a small `OffsetSource` interface, so it is tested without Kafka). Windowed features
must be right at the first evaluated event, so the read starts a *warm-up* span earlier: the feature
set's longest window (read from its query) plus the source's out-of-orderness. Only rows whose event
time is inside the range are returned.

Time ranges find offsets with Kafka's time index (`offsets_for_times`), which uses the records'
Kafka timestamps: producers must set them to the event time (rtml's training producer does; a
producer that keeps the default CreateTime of sending makes time ranges mean "sent at").
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from rtml.featuresets import FeatureSetDefinition

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from rtml.settings import FeatureJobSettings

log = logging.getLogger(__name__)

# `windows => '1 min, 5 min, 1 h, 24 h'` of SLIDING_WINDOW_FEATURES, and SQL intervals of OVER
# RANGE, TUMBLE, HOP and SESSION windows: `INTERVAL '5' MINUTE`.
_WINDOWS_ARG = re.compile(r"\bwindows\s*=>\s*'([^']*)'", re.IGNORECASE)
_INTERVAL = re.compile(
    r"\bINTERVAL\s*'\s*(\d+(?:\.\d+)?)\s*'\s*(SECOND|MINUTE|HOUR|DAY)S?\b", re.IGNORECASE
)
_INTERVAL_MS = {"SECOND": 1000, "MINUTE": 60_000, "HOUR": 3_600_000, "DAY": 86_400_000}
_WINDOW = re.compile(r"(\d+)(s|sec|seconds?|m|min|minutes?|h|hours?|d|days?)")
_WINDOW_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_SQL_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
_OFFSET_SPEC = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*(?:-\s*(\d*)\s*)?$")
DEAD_LETTER_COLUMNS = ("reason", "source_partition", "source_offset")


class RangeError(ValueError):
    """A Kafka range cannot be read as asked; the message says why and what to do instead."""


# -- ranges -------------------------------------------------------------------------------------


def parse_time(text: str | int) -> int:
    """'2026-11-01T00:00', '2026-11-01T00:00:00+01:00' or epoch ms -> epoch ms (naive = UTC)."""
    if isinstance(text, int):
        return text
    value = text.strip()
    if re.fullmatch(r"\d{10,}", value):
        return int(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO-8601 (2026-11-01T00:00, UTC unless an offset is "
            "given) or epoch milliseconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def format_time(ms: int | None) -> str:
    """Epoch ms -> '2026-11-01T00:00:00.000Z' (for messages)."""
    if ms is None:
        return "open"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_offsets(text: str) -> tuple[dict[int, int], dict[int, int]]:
    """'0:100-500,1:250' -> ({0: 100, 1: 250}, {0: 500}): start offsets, and exclusive end offsets
    where given (a partition without an end is read to its end)."""
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    for part in text.split(","):
        match = _OFFSET_SPEC.match(part)
        if match is None:
            raise ValueError(
                f"{part.strip()!r} in {text!r}: use PARTITION:START[-END], e.g. '0:100-500,1:250'"
            )
        partition, start = int(match.group(1)), int(match.group(2))
        if partition in starts:
            raise ValueError(f"partition {partition} is given twice in {text!r}")
        starts[partition] = start
        if match.group(3):
            ends[partition] = int(match.group(3))
            if ends[partition] < start:
                raise ValueError(f"partition {partition}: end {ends[partition]} < start {start}")
    return starts, ends


@dataclass(frozen=True)
class KafkaRange:
    """What to read; build one with `by_time`, `by_offsets`, `from_group` or `everything`."""

    kind: Literal["time", "offsets", "group", "all"]
    from_ms: int | None = None
    to_ms: int | None = None  # exclusive
    start_offsets: Mapping[int, int] = field(default_factory=dict)
    end_offsets: Mapping[int, int] = field(default_factory=dict)  # exclusive; missing: the end
    group: str | None = None

    @classmethod
    def by_time(cls, from_ms: int, to_ms: int | None = None) -> KafkaRange:
        """Events with event time in [from_ms, to_ms) (to the end of the topic without to_ms)."""
        if to_ms is not None and to_ms <= from_ms:
            raise RangeError(
                f"empty range: --to {format_time(to_ms)} is not after --from {format_time(from_ms)}"
            )
        return cls("time", from_ms=from_ms, to_ms=to_ms)

    @classmethod
    def by_offsets(
        cls, start: Mapping[int, int], end: Mapping[int, int] | None = None
    ) -> KafkaRange:
        """Records from `start` (per partition) to `end` (exclusive; default the end)."""
        if not start:
            raise RangeError("no partition given: use e.g. --offsets 0:100-500,1:250")
        end = dict(end or {})
        if set(end) - set(start):
            raise RangeError(
                f"end offsets for partitions without a start: {sorted(set(end) - set(start))}"
            )
        return cls("offsets", start_offsets=dict(start), end_offsets=end)

    @classmethod
    def from_group(cls, group: str, to_ms: int | None = None) -> KafkaRange:
        """From a consumer group's committed offsets to the end (or to `to_ms`)."""
        if not group:
            raise RangeError("no consumer group given")
        return cls("group", group=group, to_ms=to_ms)

    @classmethod
    def everything(cls) -> KafkaRange:
        """Every record the topic holds (no warm-up: nothing comes before)."""
        return cls("all")

    @classmethod
    def from_options(
        cls,
        from_: str | None = None,
        to: str | None = None,
        offsets: str | None = None,
        group: str | None = None,
    ) -> KafkaRange:
        """The range of command-line options --from/--to, --offsets or --group [--to]."""
        if offsets is not None:
            if from_ is not None or to is not None or group is not None:
                raise RangeError("--offsets cannot be combined with --from, --to or --group")
            return cls.by_offsets(*parse_offsets(offsets))
        to_ms = parse_time(to) if to is not None else None
        if group is not None:
            if from_ is not None:
                raise RangeError("--group starts at the group's offsets: drop --from")
            return cls.from_group(group, to_ms)
        if from_ is not None:
            return cls.by_time(parse_time(from_), to_ms)
        if to_ms is not None:
            raise RangeError("--to needs --from or --group")
        return cls.everything()

    def describe(self) -> str:
        if self.kind == "time":
            return f"event time {format_time(self.from_ms)} to {format_time(self.to_ms)}"
        if self.kind == "offsets":
            parts = [
                f"{p}:{s}-{self.end_offsets.get(p, 'end')}"
                for p, s in sorted(self.start_offsets.items())
            ]
            return f"offsets {','.join(parts)}"
        if self.kind == "group":
            return f"group {self.group}'s committed offsets to {format_time(self.to_ms)}"
        return "the whole topic"


class OffsetSource(Protocol):
    """What resolving a range asks the broker, about one topic."""

    def partitions(self) -> list[int]: ...

    def log_start(self) -> dict[int, int]: ...

    def log_end(self) -> dict[int, int]:
        """Exclusive end offsets (the last stable offset: what a read_committed consumer sees)."""
        ...

    def offsets_for_time(self, ts_ms: int) -> dict[int, int | None]:
        """Per partition, the first offset with a timestamp >= ts_ms; None if there is none."""
        ...

    def timestamp_at(self, partition: int, offset: int) -> int:
        """The timestamp of the first record at or after `offset`."""
        ...

    def committed(self, group: str) -> dict[int, int | None]: ...


@dataclass(frozen=True)
class ResolvedRange:
    """A range as offsets: read [start, end) per partition, return rows in [from_ms, to_ms)."""

    topic: str
    start: dict[int, int]  # first offset read, warm-up included
    end: dict[int, int]  # exclusive
    first: dict[int, int]  # first offset of the range itself (start + warm-up records)
    from_ms: int | None  # rows evaluated from this event time (None: all)
    to_ms: int | None  # ... until this one, exclusive (None: open)
    warm_up_ms: int
    warnings: tuple[str, ...] = ()

    @property
    def offsets_read(self) -> int:
        return sum(self.end[p] - self.start[p] for p in self.start)

    @property
    def offsets_in_range(self) -> int:
        return sum(max(0, self.end[p] - self.first[p]) for p in self.first)

    def start_option(self) -> str:
        """'scan.startup.specific-offsets' of the Kafka connector."""
        return ";".join(f"partition:{p},offset:{o}" for p, o in sorted(self.start.items()))

    def end_option(self) -> str:
        """'scan.bounded.specific-offsets' of the Kafka connector."""
        return ";".join(f"partition:{p},offset:{o}" for p, o in sorted(self.end.items()))

    def summary(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "start_offsets": {str(p): o for p, o in sorted(self.start.items())},
            "first_offsets": {str(p): o for p, o in sorted(self.first.items())},
            "end_offsets": {str(p): o for p, o in sorted(self.end.items())},
            "from": format_time(self.from_ms) if self.from_ms is not None else None,
            "to": format_time(self.to_ms) if self.to_ms is not None else None,
            "warm_up_ms": self.warm_up_ms,
            "offsets_read": self.offsets_read,
            "warnings": list(self.warnings),
        }


def resolve(
    kafka_range: KafkaRange, broker: OffsetSource, *, topic: str, warm_up_ms: int, slack_ms: int = 0
) -> ResolvedRange:
    """Start and end offsets per partition for `kafka_range`, checked against the broker.

    `warm_up_ms` (the longest window) and `slack_ms` (the out-of-orderness, as record timestamps
    and event times may disagree by that much) move the start earlier. Raises `RangeError` for an
    empty range, a range past the end of the topic, offsets that were deleted, an unknown
    partition, or a group without committed offsets; never returns offsets a read could wait on.
    """
    partitions = sorted(broker.partitions())
    if not partitions:
        raise RangeError(f"topic {topic} does not exist (or has no partitions)")
    low, high = broker.log_start(), broker.log_end()
    held = f"topic {topic} holds offsets " + ", ".join(
        f"{p}:{low[p]}-{high[p]}" for p in partitions
    )
    if all(low[p] >= high[p] for p in partitions):
        raise RangeError(f"topic {topic} has no records ({held})")
    if kafka_range.kind == "all":
        return ResolvedRange(topic, dict(low), dict(high), dict(low), None, None, 0)

    def lookup(ts_ms: int) -> dict[int, int]:  # None (no record that late) -> the end
        found = broker.offsets_for_time(ts_ms)
        return {p: high[p] if found.get(p) is None else int(found[p]) for p in partitions}  # type: ignore[arg-type]

    warnings: list[str] = []
    if kafka_range.kind == "time":
        assert kafka_range.from_ms is not None
        from_ms, to_ms = kafka_range.from_ms, kafka_range.to_ms
        first = lookup(from_ms)
        last = high if to_ms is None else lookup(to_ms)
        if all(first[p] >= last[p] for p in partitions):
            newest = max(
                broker.timestamp_at(p, high[p] - 1) for p in partitions if high[p] > low[p]
            )
            oldest = min(broker.timestamp_at(p, low[p]) for p in partitions if high[p] > low[p])
            if from_ms > newest:
                raise RangeError(
                    f"range beyond the end of topic {topic}: --from {format_time(from_ms)} is "
                    f"after its newest record ({format_time(newest)})"
                )
            raise RangeError(
                f"empty range: no record of topic {topic} between {format_time(from_ms)} and "
                f"{format_time(to_ms)} (it holds {format_time(oldest)} to {format_time(newest)})"
            )
        for p in partitions:
            if low[p] > 0 and low[p] < high[p]:
                oldest = broker.timestamp_at(p, low[p])
                if oldest > from_ms:
                    raise RangeError(
                        f"partition {p} of {topic}: records before offset {low[p]} were deleted "
                        f"(retention or compaction); its oldest record ({format_time(oldest)}) "
                        f"is after --from {format_time(from_ms)}: choose a later --from"
                    )
        end = high if to_ms is None else lookup(to_ms + slack_ms)
    else:
        if kafka_range.kind == "group":
            assert kafka_range.group is not None
            committed = broker.committed(kafka_range.group)
            if not any(committed.get(p) is not None for p in partitions):
                raise RangeError(
                    f"consumer group {kafka_range.group!r} has no committed offsets on {topic}"
                )
            missing = [p for p in partitions if committed.get(p) is None]
            if missing:
                raise RangeError(
                    f"consumer group {kafka_range.group!r} has no committed offset for partitions "
                    f"{missing} of {topic}: reset them (kafka-consumer-groups --reset-offsets) or "
                    "use --offsets"
                )
            first = {p: int(committed[p]) for p in partitions}  # type: ignore[arg-type]
            to_ms = kafka_range.to_ms
            end = high if to_ms is None else lookup(to_ms + slack_ms)
        else:
            unknown = sorted(set(kafka_range.start_offsets) - set(partitions))
            if unknown:
                raise RangeError(f"topic {topic} has no partition {unknown} (it has {partitions})")
            # Partitions not named are not read.
            first = {p: kafka_range.start_offsets.get(p, high[p]) for p in partitions}
            end = {
                p: kafka_range.end_offsets.get(p, high[p]) if p in kafka_range.start_offsets
                else high[p]
                for p in partitions
            }  # fmt: skip
            to_ms = None
        for p in partitions:
            if first[p] < low[p]:
                raise RangeError(
                    f"partition {p} of {topic}: offset {first[p]} was deleted (retention or "
                    f"compaction); the log starts at {low[p]} ({held})"
                )
            if first[p] > high[p] or end[p] > high[p]:
                beyond = first[p] if first[p] > high[p] else end[p]
                raise RangeError(
                    f"range beyond the end of topic {topic}: partition {p} ends at offset "
                    f"{high[p]}, not {beyond} ({held})"
                )
        if all(first[p] >= end[p] for p in partitions):
            raise RangeError(f"empty range: no record to read in {kafka_range.describe()} ({held})")
        # Offsets have no event time: the range starts at the oldest of their first records.
        from_ms = min(broker.timestamp_at(p, first[p]) for p in partitions if first[p] < end[p])

    reading = [p for p in partitions if first[p] < end[p]]
    warm = lookup(from_ms - warm_up_ms - slack_ms)
    start = {p: min(warm[p], first[p]) if p in reading else first[p] for p in partitions}
    for p in reading:
        if low[p] > 0 and start[p] == low[p] and warm_up_ms:
            oldest = broker.timestamp_at(p, low[p])
            if oldest > from_ms - warm_up_ms:
                warnings.append(
                    f"partition {p}: records before offset {low[p]} were deleted, so the warm-up "
                    f"starts at {format_time(oldest)}, not {format_time(from_ms - warm_up_ms)}: "
                    "windowed features of the first events may miss older events"
                )
    end = {p: max(end[p], start[p]) for p in partitions}
    return ResolvedRange(topic, start, end, first, from_ms, to_ms, warm_up_ms, tuple(warnings))


# -- warm-up ------------------------------------------------------------------------------------


def longest_window_ms(query: str) -> int | None:
    """The longest window a feature query uses, from its text; None if it names none.

    Reads SLIDING_WINDOW_FEATURES' `windows => '...'` lists and SQL `INTERVAL 'n' UNIT` literals
    (OVER RANGE, TUMBLE, HOP, SESSION). Comments are ignored.
    """
    code = _SQL_COMMENT.sub(" ", query)
    lengths: list[int] = []
    for match in _WINDOWS_ARG.finditer(code):
        lengths += [_window_ms(part) for part in match.group(1).split(",")]
    for match in _INTERVAL.finditer(code):
        lengths.append(int(float(match.group(1)) * _INTERVAL_MS[match.group(2).upper()]))
    return max(lengths) if lengths else None


def _window_ms(part: str) -> int:
    """One length of a `windows` list, with the units SLIDING_WINDOW_FEATURES accepts."""
    match = _WINDOW.fullmatch(part.strip().lower().replace(" ", ""))
    if match is None:
        raise RangeError(f"window {part.strip()!r} in the query is not a length like '5 min'")
    return int(match.group(1)) * _WINDOW_UNIT_MS[match.group(2)[0]]


# -- the broker ---------------------------------------------------------------------------------


class KafkaOffsets:
    """`OffsetSource` on a real broker (kafka-python), for one topic; close() when done."""

    def __init__(self, bootstrap: str, topic: str, *, timeout_ms: int = 30_000) -> None:
        from kafka import KafkaConsumer

        self.topic, self.bootstrap, self.timeout_ms = topic, bootstrap, timeout_ms
        # read_committed: end offsets are the last stable offsets, as the Flink source sees them.
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
            isolation_level="read_committed", request_timeout_ms=timeout_ms + 5000,
        )  # fmt: skip
        self._partitions = sorted(self.consumer.partitions_for_topic(topic) or [])

    def _tps(self) -> list:
        from kafka import TopicPartition

        return [TopicPartition(self.topic, p) for p in self._partitions]

    def partitions(self) -> list[int]:
        return list(self._partitions)

    def log_start(self) -> dict[int, int]:
        found = self.consumer.beginning_offsets(self._tps(), timeout_ms=self.timeout_ms)
        return {tp.partition: offset for tp, offset in found.items()}

    def log_end(self) -> dict[int, int]:
        found = self.consumer.end_offsets(self._tps(), timeout_ms=self.timeout_ms)
        return {tp.partition: offset for tp, offset in found.items()}

    def offsets_for_time(self, ts_ms: int) -> dict[int, int | None]:
        found = self.consumer.offsets_for_times(
            {tp: max(0, ts_ms) for tp in self._tps()}, timeout_ms=self.timeout_ms
        )
        return {tp.partition: (o.offset if o is not None else None) for tp, o in found.items()}

    def timestamp_at(self, partition: int, offset: int) -> int:
        from kafka import TopicPartition

        tp = TopicPartition(self.topic, partition)
        self.consumer.assign([tp])
        self.consumer.seek(tp, offset)
        deadline = time.monotonic() + self.timeout_ms / 1000
        while time.monotonic() < deadline:
            for records in self.consumer.poll(timeout_ms=500, max_records=1).values():
                if records:
                    return int(records[0].timestamp)
        raise RangeError(f"partition {partition} of {self.topic}: no record at offset {offset}")

    def committed(self, group: str) -> dict[int, int | None]:
        from kafka import KafkaConsumer

        # Only reads the group's offsets (OffsetFetch): it never joins the group or commits.
        reader = KafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False
        )
        try:
            return {tp.partition: reader.committed(tp) for tp in self._tps()}
        finally:
            reader.close()

    def close(self) -> None:
        self.consumer.close()


# -- running the SQL ----------------------------------------------------------------------------


@dataclass
class OfflineFeatures:
    """What an offline run produced."""

    rows: pd.DataFrame  # the feature query's columns, one row per evaluated event (or window)
    dead_letters: pd.DataFrame  # reason, source_partition, source_offset of each bad record read
    range: ResolvedRange
    elapsed_s: float
    run_id: str

    @property
    def dead_letter_counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.dead_letters["reason"].value_counts().items()}

    def summary(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "rows": len(self.rows),
            "dead_letters": self.dead_letter_counts,
            "elapsed_s": round(self.elapsed_s, 2),
            "range": self.range.summary(),
        }


# Offline runs restart nothing and checkpoint nothing: a failure is reported at once (no restart
# loop that looks like a hang), and the filesystem sink commits its files when the bounded input
# ends, without waiting for checkpoints.
OFFLINE_OVERRIDES: dict[str, str | None] = {
    "execution.checkpointing.interval": None,
    "restart-strategy.type": "none",
    # No checkpoints, so no log of state changes to keep for them (it would cost every write).
    "state.changelog.enabled": "false",
}
# HeapWindows.JOB_PARAMETER in udfs/java/.../HeapWindows.java.
HEAP_WINDOWS_PARAMETER = "rtml.sliding-windows.heap-state"
# With nothing to checkpoint or restore, state need not be serializable: by default
# SLIDING_WINDOW_FEATURES keeps its windows as plain objects on its heap (the same code computes
# the same features) and the rest of the job's state (OVER ordering, SESSION/HOP/TUMBLE windows)
# sits on the heap backend. RocksDB, with bloom filters and a fixed 512 MB per slot, is for
# ranges whose state does not fit in memory. README, "Offline features", compares them.
OFFLINE_STATE_OVERRIDES: dict[str, dict[str, str | None]] = {
    "heap": {
        "state.backend.type": "hashmap",
        "pipeline.global-job-parameters": f"{HEAP_WINDOWS_PARAMETER}:true",
    },
    "rocksdb": {
        "state.backend.type": "rocksdb",
        "state.backend.rocksdb.use-bloom-filter": "true",
        "state.backend.rocksdb.memory.fixed-per-slot": "512mb",
    },
}


# The embedded MiniCluster runs in the JVM that PyFlink starts for the process's first table
# environment, with G1, the JVM's default. An offline run wants throughput, not short pauses: with
# the parallel collector the 1M-event fraud_card run took 31.8 and 29.7 s against 40.7 and 35.9 s
# (2026-12-06, runs alternated, the same rows; G1's threads and its write barriers cost ~30% of a
# core there). JVM_ARGS is what PyFlink's gateway launcher adds to that JVM's command line.
OFFLINE_JVM_ARGS = "-XX:+UseParallelGC"
_GC_FLAG = re.compile(r"-XX:\+Use\w*GC\b")


def prefer_throughput_gc(
    environ: MutableMapping[str, str] | None = None, *, jvm_running: bool | None = None
) -> bool:
    """Ask for the parallel collector in the JVM PyFlink is about to start for an offline run.

    Nothing changes when a JVM already runs in this process (a live job or an earlier run
    started it: it keeps its collector) or JVM_ARGS already names a collector (the user's
    choice). Returns whether JVM_ARGS was set.
    """
    environ = os.environ if environ is None else environ
    if jvm_running is None:
        from pyflink import java_gateway

        jvm_running = java_gateway._gateway is not None  # noqa: SLF001 - no public "is it up?"
    given = environ.get("JVM_ARGS", "")
    if jvm_running or _GC_FLAG.search(given):
        return False
    environ["JVM_ARGS"] = f"{given} {OFFLINE_JVM_ARGS}".strip()
    return True


def offline_overrides(state: str) -> dict[str, str | None]:
    """The Flink configuration changes of an offline run whose state is `state` (heap, rocksdb)."""
    return {**OFFLINE_OVERRIDES, **OFFLINE_STATE_OVERRIDES[state]}


def warm_up_for(definition: FeatureSetDefinition) -> int:
    """The warm-up a feature set needs: its query's longest window (error if none is found)."""
    found = longest_window_ms(definition.query.read_text())
    if found is None:
        raise RangeError(
            f"{definition.query}: no window found in the query (windows => '...' or INTERVAL); "
            "pass warm_up_ms explicitly (0 if the features are not windowed)"
        )
    return found


def compute_features(
    definition: FeatureSetDefinition,
    kafka_range: KafkaRange,
    settings: FeatureJobSettings,
    *,
    topic: str | None = None,
    warm_up_ms: int | None = None,
    run_id: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> OfflineFeatures:
    """Run the feature set's source SQL and query over `kafka_range` of its source topic (or
    `topic`) on the embedded MiniCluster, and collect the rows of the range.

    The job runs in streaming mode (the windows are a streaming table function) with a bounded
    source, reads under a consumer group of its own, and writes nowhere: bad records are
    returned in `dead_letters` (counted by reason), not sent to the dead-letter topic. With
    `on_progress`, the group commits what it has read every second and `on_progress(records)`
    hears the count (records read so far, warm-up included) about as often, and every record
    of the range once the run has ended; the group is deleted afterwards. Without, it commits
    nothing.
    """
    from pyflink.table.expressions import col, lit, null_of

    from jobs.features import feature_query, source_params
    from rtml import flinkjob, sqlfiles

    started = time.monotonic()
    run_id = run_id or uuid.uuid4().hex[:12]
    topic = topic or definition.source.topic
    warm_up = warm_up_for(definition) if warm_up_ms is None else warm_up_ms
    broker = KafkaOffsets(settings.kafka_bootstrap, topic)
    try:
        resolved = resolve(
            kafka_range, broker, topic=topic, warm_up_ms=warm_up,
            slack_ms=definition.source.out_of_orderness_ms,
        )  # fmt: skip
    finally:
        broker.close()

    params = {
        **source_params(definition, settings),
        "topic": topic,
        "group_id": f"rtml-offline-{definition.name}-{run_id}",
        "start_offsets": resolved.start_option(),
        "end_offsets": resolved.end_option(),
        "auto_commit": "true" if on_progress is not None else "false",
    }
    prefer_throughput_gc()
    # From the table environment on, every Java call of this thread on one Java thread (the
    # ReadWatcher and a caller's progress ticker run beside it).
    with flinkjob.java_calls_on_one_thread():
        t_env = flinkjob.table_environment(
            settings,
            f"rtml-offline-{definition.name}",
            overrides=offline_overrides(settings.offline_state),
        )
        statements = [
            *sqlfiles.load("common/raw_source.sql", params),
            *sqlfiles.load("common/bounded_range.sql", params),
            *sqlfiles.render(definition.source.sql.read_text(), params, definition.source.sql),
        ]
        flinkjob.statement_set(t_env, statements)  # DDL and views only: no INSERT is run
        features = feature_query(t_env, definition)
        if resolved.from_ms is not None:
            features = features.where(col(definition.event_time_ms) >= lit(resolved.from_ms))
        if resolved.to_ms is not None:
            features = features.where(col(definition.event_time_ms) < lit(resolved.to_ms))

        # One job, one collect: feature rows and dead letters in one union, told apart by `reason`.
        schema = features.get_schema()
        names, types = schema.get_field_names(), schema.get_field_data_types()
        extra = _dead_letter_fields()
        taken = set(names) & {name for name, _ in extra}
        if taken:
            raise RangeError(
                f"{definition.query}: columns {sorted(taken)} clash with dead letters'"
            )
        feature_side = features.select(
            *[
                # the event-time attribute becomes a plain timestamp: a union needs equal types
                col(n).cast(t).alias(n) if n == definition.event_time else col(n)
                for n, t in zip(names, types, strict=True)
            ],
            *[null_of(t).alias(n) for n, t in extra],
        )
        dead_side = (
            t_env.from_path("classified")
            .where(col("reason").is_not_null)
            .select(
                *[null_of(t).alias(n) for n, t in zip(names, types, strict=True)],
                col("reason"),
                col("source_partition"),
                col("source_offset"),
            )  # fmt: skip
        )
        both = feature_side.union_all(dead_side)
        if on_progress is None:
            collected = _collect(t_env, both)
        else:
            with ReadWatcher(
                settings.kafka_bootstrap, params["group_id"], resolved.start, on_progress
            ):
                collected = _collect(t_env, both)
            # Read to the end. (The consumer commits as it polls, and stops polling a partition once
            # it reaches its end offset: the last commit may be short of it.)
            on_progress(resolved.offsets_read)
    timezone = str(t_env.get_config().get_local_timezone())
    rows, dead = split_rows(collected, names, types, timezone, definition.event_time_ms)
    return OfflineFeatures(rows, dead, resolved, time.monotonic() - started, run_id)


def records_read(start: Mapping[int, int], committed: Mapping[int, int | None]) -> int:
    """Records read from `start` on, by a group's committed offsets per partition (pure)."""
    return sum(max(0, (committed.get(p) or 0) - offset) for p, offset in start.items())


class ReadWatcher:
    """While in its `with` block, reports a run's records read (its group's committed offsets)
    every `interval_s`; deletes the group at the end."""

    def __init__(
        self,
        bootstrap: str,
        group: str,
        start: Mapping[int, int],
        report: Callable[[int], None],
        interval_s: float = 1.0,
    ) -> None:
        self.bootstrap, self.group, self.start = bootstrap, group, dict(start)
        self.report, self.interval_s = report, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="rtml-offline-read", daemon=True)

    def __enter__(self) -> ReadWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        from kafka import KafkaAdminClient

        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap, client_id="rtml-offline-progress"
            )
        except Exception as error:  # noqa: BLE001 - progress is a nicety: never fail the run
            log.warning("offline run: no progress (cannot reach %s): %r", self.bootstrap, error)
            return
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    found = admin.list_group_offsets(self.group).get(self.group, {})
                except Exception as error:  # noqa: BLE001 - e.g. no group coordinator yet
                    log.debug("offline run: group %s not readable yet: %r", self.group, error)
                    continue
                committed = {tp.partition: meta.offset for tp, meta in found.items()}
                self.report(records_read(self.start, committed))
        finally:
            # The job has ended and its consumer left: the group holds only its offsets.
            with contextlib.suppress(Exception):
                admin.delete_groups([self.group])
            admin.close()


def _collect(t_env: object, table: object) -> pa.Table:
    """Run `table` into JSON-lines files of a temporary folder and read them back with pyarrow
    (`read_json_rows`; `arrow_to_pandas` makes the frame `Table.to_pandas()` would give).

    Not `Table.to_pandas()`: its collect sink and row-by-row Arrow conversion cost about 150 µs
    a fraud_card row (a quarter of the run, 2026-12-05); the filesystem sink and pyarrow's
    reader about 15 µs.
    The sink commits its files when the bounded input ends (no checkpoint is needed); unfinished
    files are hidden (`.part-...`) and are not read.
    """
    from pyflink.table import FormatDescriptor, Schema, TableDescriptor

    schema = table.get_schema()  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory(prefix="rtml-offline-") as folder:
        sink = f"rtml_offline_rows_{uuid.uuid4().hex[:12]}"
        t_env.create_temporary_table(  # type: ignore[attr-defined]
            sink,
            TableDescriptor.for_connector("filesystem")
            .schema(Schema.new_builder().from_row_data_type(schema.to_row_data_type()).build())
            .option("path", folder)
            .format(
                FormatDescriptor.for_format("json")
                .option("timestamp-format.standard", "ISO-8601")
                .option("encode.decimal-as-plain-number", "true")
                .build()
            )
            .build(),
        )
        try:
            table.execute_insert(sink).wait()  # type: ignore[attr-defined]
        except Exception as error:  # noqa: BLE001 - Py4J wraps the job's failure; keep its reason
            raise RuntimeError(f"offline feature run failed: {root_cause(error)}") from error
        finally:
            t_env.drop_temporary_table(sink)  # type: ignore[attr-defined]
        files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and _is_committed(p))
        return read_json_rows(files, schema.get_field_names(), schema.get_field_data_types())


def _is_committed(path: Path) -> bool:
    return not path.name.startswith((".", "_"))


def read_json_rows(files: list[Path], names: list[str], types: list) -> pa.Table:
    """Flink's JSON-lines files as one Arrow table of `names`: each column typed by its Flink
    type (`_arrow_type`; timestamps as their ISO-8601 text), NULLs kept."""
    import pyarrow as pa
    import pyarrow.json as pa_json

    arrow_types = [(name, _arrow_type(kind)) for name, kind in zip(names, types, strict=True)]
    explicit = pa.schema([(name, kind) for name, kind in arrow_types if kind is not None])
    options = pa_json.ParseOptions(explicit_schema=explicit, unexpected_field_behavior="infer")
    tables = [pa_json.read_json(f, parse_options=options) for f in files if f.stat().st_size > 0]
    if not tables:
        return pa.table({name: pa.array([], kind or pa.null()) for name, kind in arrow_types})
    return pa.concat_tables(tables, promote_options="default").select(list(names))


def split_rows(
    table: pa.Table, names: list[str], types: list, timezone: str, time_column: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A run's collected union as (feature rows in event-time order, ties in the order read;
    dead letters by partition and offset), both as `arrow_to_pandas` makes them.

    Split, ordered and typed in Arrow: in pandas (nullable types for the union's NULLs, typed
    back, then a sort of every column) it took about 2 s of a 1M-event run (2026-12-06)."""
    import pyarrow.compute as pc

    is_dead = pc.is_valid(table.column("reason"))
    features = table.filter(pc.invert(is_dead)).select(list(names))
    features = features.take(pc.sort_indices(features, [(time_column, "ascending")]))  # stable
    dead = table.filter(is_dead).select(list(DEAD_LETTER_COLUMNS))
    dead = dead.take(
        pc.sort_indices(dead, [("source_partition", "ascending"), ("source_offset", "ascending")])
    )
    dead_types = [kind for _, kind in _dead_letter_fields()]
    return (
        arrow_to_pandas(features, names, types, timezone),
        arrow_to_pandas(dead, list(DEAD_LETTER_COLUMNS), dead_types, timezone),
    )


def _dead_letter_fields() -> list[tuple[str, object]]:
    """(name, Flink type) of the dead-letter columns an offline run collects beside the rows."""
    from pyflink.table import DataTypes

    kinds = [DataTypes.STRING(), DataTypes.INT(), DataTypes.BIGINT()]
    return list(zip(DEAD_LETTER_COLUMNS, kinds, strict=True))


def arrow_to_pandas(table: pa.Table, names: list[str], types: list, timezone: str) -> pd.DataFrame:
    """The frame `Table.to_pandas()` gives for rows of these Flink types, integer and boolean
    columns typed again: TIMESTAMP_LTZ tz-aware in the session time zone, TIMESTAMP naive, both
    in microseconds; integers int64, or pandas' nullable Int64 where a value is missing (exact,
    where `to_pandas` goes through float64 and rounds beyond 2**53); booleans bool, or nullable
    boolean; doubles exact."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyflink.table import types as t

    columns = {}
    for name, flink_type in zip(names, types, strict=True):
        column = table.column(name)
        if isinstance(flink_type, t.LocalZonedTimestampType):
            instants = pc.cast(column, pa.timestamp("us", tz="UTC")).to_pandas()
            columns[name] = instants.dt.tz_convert(timezone)
        elif isinstance(flink_type, t.TimestampType):
            columns[name] = pc.cast(column, pa.timestamp("us")).to_pandas()
        elif isinstance(flink_type, t.BigIntType | t.IntType | t.SmallIntType | t.TinyIntType):
            columns[name] = _maybe_nullable(pc.cast(column, pa.int64()), pd.Int64Dtype())
        elif isinstance(flink_type, t.BooleanType):
            columns[name] = _maybe_nullable(pc.cast(column, pa.bool_()), pd.BooleanDtype())
        else:
            columns[name] = column.to_pandas()
    # (not `columns=names`: with it pandas turns tz-aware columns into objects, 1.7 s for 1M)
    return pd.DataFrame(columns)


def _maybe_nullable(column: pa.ChunkedArray, nullable: object) -> pd.Series:
    """numpy's type when no value is missing, else pandas' nullable one (`nullable`)."""
    if column.null_count == 0:
        return column.to_pandas()
    return column.to_pandas(types_mapper={column.type: nullable}.get)


def _arrow_type(flink_type: object) -> object:
    """The Arrow type a JSON value of `flink_type` is read as; None: let pyarrow infer it."""
    import pyarrow as pa
    from pyflink.table import types as t

    if isinstance(flink_type, t.VarCharType | t.CharType):
        return pa.string()
    if isinstance(flink_type, t.BigIntType | t.IntType | t.SmallIntType | t.TinyIntType):
        return pa.int64()
    if isinstance(flink_type, t.DoubleType | t.FloatType):
        return pa.float64()
    if isinstance(flink_type, t.BooleanType):
        return pa.bool_()
    if isinstance(flink_type, t.LocalZonedTimestampType | t.TimestampType):
        return pa.string()  # parsed by pandas: one way for both forms (with and without Z)
    return None


def root_cause(error: Exception) -> str:
    """The innermost Java cause of a failed job (the one that says what went wrong), else the
    first line of the error."""
    causes = [
        line.strip().removeprefix("Caused by: ")
        for line in str(error).splitlines()
        if line.strip().startswith("Caused by: ")
    ]
    if causes:
        return causes[-1]
    from rtml.flinkjob import _first_line

    return _first_line(error)
