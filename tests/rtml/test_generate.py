"""Unit tests of the seeded event generator and the expected tumbling-window counts (pure)."""

from __future__ import annotations

import json
from collections import Counter

from rtml import generate
from rtml.generate import Record

START_MS = 1_763_700_000_000


def test_smoke_events_are_deterministic_per_seed() -> None:
    a = generate.smoke_events(500, start_ms=START_MS, seed=7)
    b = generate.smoke_events(500, start_ms=START_MS, seed=7)
    c = generate.smoke_events(500, start_ms=START_MS, seed=8)
    assert a == b
    assert [e["key"] for e in a] != [e["key"] for e in c]
    assert [e["ts"] for e in a] == [e["ts"] for e in c]  # the seed only picks keys


def test_smoke_events_shape_order_and_spacing() -> None:
    events = generate.smoke_events(5, keys=3, start_ms=START_MS, events_per_second=100)
    assert [(e["ts"], e["seq"]) for e in events] == [
        (START_MS, 0),
        (START_MS + 10, 1),
        (START_MS + 20, 2),
        (START_MS + 30, 3),
        (START_MS + 40, 4),
    ]
    assert all(set(e) == {"key", "ts", "seq"} for e in events)
    assert {e["key"] for e in events} <= {"k0", "k1", "k2"}


def test_smoke_events_fractional_spacing_is_non_decreasing() -> None:
    events = generate.smoke_events(1000, keys=4, start_ms=0, events_per_second=3.0, seed=1)
    ts = [e["ts"] for e in events]
    assert ts == sorted(ts)
    assert ts[:4] == [0, 333, 666, 1000]
    assert ts[-1] == int(999 * 1000 / 3.0)
    assert [e["seq"] for e in events] == list(range(1000))


def test_smoke_events_fast_rate_repeats_timestamps_in_order() -> None:
    events = generate.smoke_events(10, start_ms=5, events_per_second=4000)
    assert [e["ts"] for e in events] == [5, 5, 5, 5, 6, 6, 6, 6, 7, 7]


def test_smoke_events_keys_are_skewed_towards_k0() -> None:
    events = generate.smoke_events(20_000, keys=5, start_ms=START_MS, seed=3)
    counts = Counter(e["key"] for e in events)
    assert set(counts) == {"k0", "k1", "k2", "k3", "k4"}
    ranked = [key for key, _ in counts.most_common()]
    assert ranked == ["k0", "k1", "k2", "k3", "k4"]
    # weights 1, 1/2, 1/3, 1/4, 1/5 -> k0 gets 1/H5 = 43.8 % of events
    assert 0.41 < counts["k0"] / len(events) < 0.47
    assert 1.8 < counts["k0"] / counts["k1"] < 2.2


def test_smoke_events_single_key_and_empty() -> None:
    assert {e["key"] for e in generate.smoke_events(50, keys=1, start_ms=0)} == {"k0"}
    assert generate.smoke_events(0, start_ms=0) == []


def test_tumbling_counts_exact_with_boundaries() -> None:
    events = [
        {"key": "a", "ts": 0},  # first millisecond of window [0, 10_000)
        {"key": "a", "ts": 9_999},  # last millisecond of the same window
        {"key": "a", "ts": 10_000},  # exactly on the boundary: the later window
        {"key": "b", "ts": 10_000},
        {"key": "b", "ts": 19_999},
        {"key": "b", "ts": 20_000},
        {"key": "a", "ts": 35_000},
        {"key": "b", "ts": 5_000},  # out of order: still counted in its own window
    ]
    assert generate.tumbling_counts(events, 10_000) == {
        ("a", 0): 2,
        ("a", 10_000): 1,
        ("b", 10_000): 2,
        ("b", 20_000): 1,
        ("a", 30_000): 1,
        ("b", 0): 1,
    }


def test_tumbling_counts_with_epoch_timestamps_and_string_fields() -> None:
    events = [
        {"key": "k0", "ts": START_MS - 1},
        {"key": "k0", "ts": START_MS},
        {"key": "k0", "ts": str(START_MS + 9_999)},
        {"key": 7, "ts": START_MS + 10_000},
    ]
    assert generate.tumbling_counts(events, 10_000) == {
        ("k0", START_MS - 10_000): 1,
        ("k0", START_MS): 2,
        ("7", START_MS + 10_000): 1,
    }


def test_tumbling_counts_total_matches_generated_events() -> None:
    events = generate.smoke_events(2_345, start_ms=START_MS + 1_234, seed=11)
    counts = generate.tumbling_counts(events, 1_000)
    assert sum(counts.values()) == 2_345
    assert all(start % 1_000 == 0 for _, start in counts)
    # 100 events/s from START_MS + 1.234 s: the first window holds 77 events (1234..1999 ms)
    assert sum(n for (_, start), n in counts.items() if start == START_MS + 1_000) == 77
    assert generate.tumbling_counts([], 1_000) == {}


def test_as_records_keys_by_event_key_and_values_are_json() -> None:
    events = [{"key": "k1", "ts": 1, "seq": 0}, {"key": "k0", "ts": 2, "seq": 1}]
    records = list(generate.as_records(events))
    assert records == [
        Record(b"k1", b'{"key": "k1", "ts": 1, "seq": 0}'),
        Record(b"k0", b'{"key": "k0", "ts": 2, "seq": 1}'),
    ]
    assert [json.loads(r.value) for r in records] == events


def test_watermark_markers_one_event_per_partition() -> None:
    markers = generate.watermark_markers(START_MS + 20_000, 3)
    value = b'{"key": "_watermark", "ts": 1763700020000, "seq": -1}'
    assert markers == [
        Record(b"_watermark", value, 0),
        Record(b"_watermark", value, 1),
        Record(b"_watermark", value, 2),
    ]
    assert generate.watermark_markers(0, 0) == []
    assert generate.watermark_markers(5, 1, key="m") == [
        Record(b"m", b'{"key": "m", "ts": 5, "seq": -1}', 0)
    ]
