"""Unit tests of the online store's pure parts: keys, values, the newest-wins rule, batching."""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import pickle
import struct
import threading
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
import redis.exceptions

from rtml import online_store as store
from rtml.online_store import (
    ErrorKind,
    FeatureRow,
    FeatureSet,
    OnlineFeatures,
    Outcome,
    RedisFeatureWriter,
    WriterSettings,
)
from rtml.processes import free_port

T0 = 1_763_702_410_000  # 2025-11-21 05:20:10 UTC


# -- keys ------------------------------------------------------------------------------------------


def test_feature_key_layout_and_parse_round_trip() -> None:
    assert store.feature_key("clicks", "user-1") == "rtml:fs:clicks:user-1"
    assert store.feature_key("clicks.v2", 42) == "rtml:fs:clicks.v2:42"
    assert store.feature_key("c", np.int64(42)) == "rtml:fs:c:42"
    # the entity id is verbatim, ':' included: the feature set name has none
    key = store.feature_key("clicks", "tenant:7:user 1")
    assert key == "rtml:fs:clicks:tenant:7:user 1"
    assert store.parse_key(key) == ("clicks", "tenant:7:user 1")
    assert store.parse_key(key.encode()) == ("clicks", "tenant:7:user 1")


@pytest.mark.parametrize("name", ["", "a:b", "_private", "-x", ".x", "a b", "é", "x" * 129, 3])
def test_invalid_featureset_names_are_rejected(name: object) -> None:
    with pytest.raises(ValueError, match="invalid feature set name"):
        store.feature_key(name, "e")  # type: ignore[arg-type]


@pytest.mark.parametrize("entity", ["", True, 1.0, None, b"e"])
def test_invalid_entity_ids_are_rejected(entity: object) -> None:
    with pytest.raises(ValueError, match="invalid entity id"):
        store.feature_key("fs", entity)  # type: ignore[arg-type]


@pytest.mark.parametrize("key", ["fs:clicks:e", "rtml:fs:clicks", "rtml:fs:clicks:", "rtml:fs::e"])
def test_parse_key_rejects_other_keys(key: str) -> None:
    with pytest.raises(ValueError, match="not an rtml feature key"):
        store.parse_key(key)


# -- values ----------------------------------------------------------------------------------------

ROUND_TRIP = [
    0, -1, 2**63, 10**30,
    0.0, -0.0, 1.0, 0.1, 1 / 3, 1e-310, 5e-324, 1.7976931348623157e308, -2.5e-8, 1e22,
    float("inf"), float("-inf"),
    "", "plain", 'quote " back \\ slash', "ünïcödé ✓", "line\nbreak\ttab", "{\"t\":1,\"v\":2}",
    True, False, None,
]  # fmt: skip


def _same(a: object, b: object) -> bool:
    """Equal and of the same type; floats bit for bit (so -0.0 != 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)  # type: ignore[arg-type]
    return a == b


@pytest.mark.parametrize("value", ROUND_TRIP, ids=repr)
def test_encode_decode_round_trips_type_and_exact_value(value: object) -> None:
    encoded = store.encode(value, T0)
    decoded, event_time = store.decode(encoded)
    assert _same(decoded, value), (encoded, decoded)
    assert event_time == T0
    assert store.decode(encoded.encode()) == (decoded, T0) or math.isnan(decoded)  # type: ignore[arg-type]


def test_nan_round_trips() -> None:
    decoded, _ = store.decode(store.encode(float("nan"), T0))
    assert isinstance(decoded, float) and math.isnan(decoded)


def test_encoding_is_compact_readable_json_with_the_event_time_first() -> None:
    assert store.encode(0.25, T0) == '{"t":1763702410000,"v":0.25}'
    assert store.encode(3, T0) == '{"t":1763702410000,"v":3}'
    assert store.encode(3.0, T0) == '{"t":1763702410000,"v":3.0}'
    assert store.encode(True, T0) == '{"t":1763702410000,"v":true}'
    assert store.encode(None, -5) == '{"t":-5,"v":null}'
    assert store.encode("ä", T0) == '{"t":1763702410000,"v":"ä"}'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.int64(7), 7),
        (np.int8(-3), -3),
        (np.uint64(2**64 - 1), 2**64 - 1),
        (np.float64(0.1), 0.1),
        (np.float32(0.1), float(np.float32(0.1))),  # widened exactly, not re-rounded
        (np.bool_(True), True),
        (pd.NA, None),
        (pd.NaT, None),
    ],
    ids=repr,
)
def test_numpy_and_pandas_scalars_become_plain_python(value: object, expected: object) -> None:
    assert _same(store.normalize_value(value), expected)
    assert _same(store.decode(store.encode(value, T0))[0], expected)


@pytest.mark.parametrize(
    "value", [[1], {"a": 1}, Decimal("1.5"), dt.datetime(2025, 1, 1), b"bytes", object()]
)
def test_unsupported_value_types_are_rejected(value: object) -> None:
    with pytest.raises(TypeError, match="features are int, float, str, bool or None"):
        store.encode(value, T0)


def test_event_times_from_ints_and_datetimes() -> None:
    aware = dt.datetime(2025, 11, 21, 5, 20, 10, tzinfo=dt.UTC)
    assert store.event_ms(T0) == T0
    assert store.event_ms(np.int64(T0)) == T0
    assert store.event_ms(aware) == T0
    assert store.event_ms(aware.replace(tzinfo=None)) == T0  # naive means UTC
    assert store.event_ms(aware.astimezone(dt.timezone(dt.timedelta(hours=2)))) == T0
    assert store.event_ms(pd.Timestamp(T0 + 1, unit="ms")) == T0 + 1
    assert store.event_ms(pd.Timestamp(T0, unit="ms", tz="Europe/Berlin")) == T0
    assert store.event_ms(np.datetime64(T0, "ms")) == T0
    assert store.event_ms(pd.Timestamp("2025-11-21 05:20:10.0019")) == T0 + 1  # floored
    assert store.event_ms(-1) == -1


@pytest.mark.parametrize("value", [1.5, True, "1763702410000", None, 2**53])
def test_invalid_event_times_are_rejected(value: object) -> None:
    with pytest.raises(ValueError, match="event time"):
        store.event_ms(value)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "3",
        "not json",
        '{"v":1,"t":2}',
        '{"t":1}',
        '{"t":1,"v":2,"x":3}',
        '{"t":1,"v":[1]}',
        '{"t":"1","v":1}',
        '{"t":1.5,"v":1}',
        '{"t":1,"v":1,"t":2}',
        '{"t":1,"v":1}x',
    ],
)
def test_decode_rejects_what_is_not_a_feature_value(stored: str) -> None:
    with pytest.raises(ValueError, match="not an rtml feature value"):
        store.decode(stored)


def test_stored_event_ms_reads_the_prefix_as_the_lua_script_does() -> None:
    assert store.stored_event_ms('{"t":-12,"v":"x"}') == -12
    assert store.stored_event_ms(b'{"t":12,"v":null}') == 12
    for bad in ('{"v":1,"t":2}', '{"t": 1,"v":1}', '{"t":1e3,"v":1}', ' {"t":1,"v":1}'):
        with pytest.raises(ValueError, match="not an rtml feature value"):
            store.stored_event_ms(bad)


# -- the newest-wins rule --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "incoming", "expected"),
    [
        (None, (10, 1.0), Outcome.WRITE),
        ((10, 1.0), (11, 2.0), Outcome.WRITE),  # newer
        ((10, 1.0), (11, 1.0), Outcome.WRITE),  # newer, same value: the event time moves on
        ((10, 1.0), (10, 1.0), Outcome.UNCHANGED),  # replay
        ((10, 1.0), (10, 2.0), Outcome.WRITE),  # same time, corrected value: a re-fired window
        ((10, 1), (10, 1.0), Outcome.WRITE),  # int vs float are different values
        ((10, 0.0), (10, -0.0), Outcome.WRITE),
        ((10, 1.0), (9, 2.0), Outcome.STALE),  # late / replayed older event
        ((10, 1.0), (9, 1.0), Outcome.STALE),
        ((-5, "a"), (-6, "b"), Outcome.STALE),
        ((2**53 - 2, 1), (2**53 - 1, 2), Outcome.WRITE),  # exact at the edge of Lua's doubles
    ],
)
def test_newest_wins(
    stored: tuple[int, object] | None, incoming: tuple[int, object], expected: Outcome
) -> None:
    old = store.encode(stored[1], stored[0]) if stored else None
    assert store.newest_wins(old, store.encode(incoming[1], incoming[0])) is expected


def test_newest_wins_rejects_foreign_values() -> None:
    with pytest.raises(ValueError):
        store.newest_wins("17", store.encode(1, 1))
    with pytest.raises(ValueError):
        store.newest_wins(None, "17")


def test_lua_script_is_identified_by_its_sha1() -> None:
    import hashlib

    assert hashlib.sha1(store.NEWEST_WINS_LUA.encode()).hexdigest() == store.NEWEST_WINS_SHA
    assert "HMGET" in store.NEWEST_WINS_LUA and "PEXPIRE" in store.NEWEST_WINS_LUA


# -- rows and the write plan -----------------------------------------------------------------------

FS = FeatureSet("clicks", version=3, ttl_ms=60_000)


def test_featureset_validation() -> None:
    assert FS.version == "3"
    with pytest.raises(ValueError):
        FeatureSet("bad:name")
    with pytest.raises(ValueError):
        FeatureSet("ok", ttl_ms=0)
    with pytest.raises(ValueError):
        FeatureSet("ok", version="")


def test_plan_merges_rows_per_entity_keeping_the_newest_value_per_feature() -> None:
    rows = [
        FeatureRow("a", 10, {"n": 1, "s": "x"}),
        FeatureRow("b", 10, {"n": 5}),
        FeatureRow("a", 12, {"n": 2}),  # newer n; s untouched
        FeatureRow("a", 11, {"n": 9, "s": "y"}),  # n is older than 12: stays 2; s is newer
        FeatureRow(7, 10, {"n": 1}),
        FeatureRow("7", 10, {"n": 2}),  # the same entity as 7, same time: later row wins
    ]
    writes, superseded = store.plan_writes(rows, FS)
    assert [w.key for w in writes] == ["rtml:fs:clicks:a", "rtml:fs:clicks:b", "rtml:fs:clicks:7"]
    assert writes[0].fields == {"n": store.encode(2, 12), "s": store.encode("y", 11)}
    assert writes[1].fields == {"n": store.encode(5, 10)}
    assert writes[2].fields == {"n": store.encode(2, 10)}
    assert superseded == 4
    assert writes[1].args() == ["n", store.encode(5, 10)]


def test_plan_equals_applying_rows_one_by_one() -> None:
    rng = np.random.default_rng(1)
    rows = [
        FeatureRow(f"e{rng.integers(5)}", int(rng.integers(8)), {f"f{rng.integers(3)}": i})
        for i in range(300)
    ]
    sequential: dict[tuple[str, str], str] = {}
    for row in rows:
        for name, value in row.values.items():
            slot = (store.feature_key(FS.name, row.entity_id), name)
            encoded = store.encode(value, row.event_ms)
            if store.newest_wins(sequential.get(slot), encoded) is Outcome.WRITE:
                sequential[slot] = encoded
    writes, _ = store.plan_writes(rows, FS)
    planned = {(w.key, name): value for w in writes for name, value in w.fields.items()}
    assert planned == sequential


def test_rows_from_dicts_and_dataframes() -> None:
    frame = pd.DataFrame(
        {
            "entity_id": np.array([1, 2], dtype=np.int64),
            "event_ms": pd.to_datetime([T0, T0 + 1], unit="ms"),
            "count": np.array([3, 4], dtype=np.int64),
            "ratio": np.array([0.5, np.nan]),
            "label": ["x", None],
            "flag": np.array([True, False]),
            "maybe": pd.array([1, None], dtype="Int64"),
        }
    )
    writes, _ = store.plan_writes(store.as_rows(frame, FS), FS)
    assert [w.key for w in writes] == ["rtml:fs:clicks:1", "rtml:fs:clicks:2"]
    first = {name: store.decode(value) for name, value in writes[0].fields.items()}
    assert first == {
        "count": (3, T0), "ratio": (0.5, T0), "label": ("x", T0), "flag": (True, T0),
        "maybe": (1, T0),
    }  # fmt: skip
    second = {name: store.decode(value)[0] for name, value in writes[1].fields.items()}
    assert math.isnan(second.pop("ratio"))
    assert second == {"count": 4, "label": None, "flag": False, "maybe": None}

    dicts = [{"entity_id": "u", "event_ms": T0, "a": 1}]
    assert store.plan_writes(store.as_rows(dicts, FS), FS)[0][0].fields == {
        "a": store.encode(1, T0)
    }
    custom = FeatureSet("clicks", entity_column="user", event_time_column="ts")
    row = next(iter(store.as_rows([{"user": "u", "ts": T0, "a": 1}], custom)))
    assert row == FeatureRow("u", T0, {"a": 1})


def test_bad_rows_are_named() -> None:
    with pytest.raises(ValueError, match="no 'event_ms' column"):
        list(store.as_rows([{"entity_id": "u", "a": 1}], FS))
    with pytest.raises(TypeError, match="many rows"):
        list(store.as_rows({"entity_id": "u", "event_ms": 1}, FS))
    with pytest.raises(ValueError, match="invalid feature name '_version'"):
        store.plan_writes([FeatureRow("u", 1, {"_version": 1})], FS)
    with pytest.raises(TypeError, match="feature 'a' of rtml:fs:clicks:u"):
        store.plan_writes([FeatureRow("u", 1, {"a": [1, 2]})], FS)


def _bulks(resp: str | bytes) -> list[str]:
    """The RESP bulk strings in `resp`, one after the other (lengths in UTF-8 bytes)."""
    data = resp.encode() if isinstance(resp, str) else resp
    out, at = [], 0
    while at < len(data):
        assert data[at : at + 1] == b"$", data[at:]
        end = data.index(b"\r\n", at)
        size = int(data[at + 1 : end])
        out.append(data[end + 2 : end + 2 + size].decode())
        assert data[end + 2 + size : end + 4 + size] == b"\r\n"
        at = end + 4 + size
    return out


def _planned(groups: list[store.KeyGroup]) -> dict[tuple[str, str], str]:
    """(key, feature) -> encoded value, read back from the groups' RESP arguments."""
    planned = {}
    for group in groups:
        assert _bulks(group.key_arg) == [group.key]
        t, n, *pairs = _bulks(group.args)
        assert (int(t), 2 * int(n), group.nargs) == (group.event_ms, len(pairs), 2 + len(pairs))
        for name, value in zip(pairs[::2], pairs[1::2], strict=True):
            assert store.stored_event_ms(value) == group.event_ms
            assert (group.key, name) not in planned
            planned[(group.key, name)] = value
    return planned


def test_plan_columns_equals_plan_writes_for_every_column_type() -> None:
    rng = np.random.default_rng(3)
    n = 400
    floats = rng.normal(size=n) * 10.0 ** rng.integers(-8, 12, n)
    floats[rng.integers(0, n, 20)] = np.nan
    floats[:4] = [np.inf, -np.inf, -0.0, 1e22]
    frame = pd.DataFrame(
        {
            "entity_id": [f"e{i}" if i % 7 else i for i in rng.integers(0, 60, n)],
            "event_ms": rng.integers(T0 - 5, T0 + 5, n),  # many ties
            "count": rng.integers(-(2**62), 2**62, n),
            "small": rng.integers(0, 3, n).astype(np.int8),
            "huge": np.full(n, 2**64 - 1, dtype=np.uint64),
            "ratio": floats,
            "single": floats.astype(np.float32),
            "flag": rng.integers(0, 2, n).astype(bool),
            "label": rng.choice(["", "plain", 'q"b\\s', "ünï ✓", "line\nbreak", None], n),
            "maybe": pd.Series(rng.integers(0, 4, n), dtype="Int64").where(floats > 0, pd.NA),
            "mixed": rng.choice(np.array([1, 2.5, "x", None, True], dtype=object), n),
        }
    )
    records = frame.to_dict("records")
    writes, superseded = store.plan_writes(store.as_rows(records, FS), FS)
    expected = {(w.key, name): value for w in writes for name, value in w.fields.items()}

    groups, rows, superseded_columns = store.plan_columns(
        frame["entity_id"], frame["event_ms"],
        {name: frame[name] for name in frame.columns[2:]}, FS,
    )  # fmt: skip

    assert _planned(groups) == expected
    assert (rows, superseded_columns) == (n, superseded)
    assert len(groups) == len(writes) == len({w.key for w in writes})
    # plain sequences work too, and so do datetimes as event times
    as_lists = store.plan_columns(
        list(frame["entity_id"]), pd.to_datetime(frame["event_ms"], unit="ms"),
        {"count": frame["count"].tolist()}, FS,
    )[0]  # fmt: skip
    assert _planned(as_lists) == {slot: v for slot, v in expected.items() if slot[1] == "count"}


def test_plan_columns_keeps_the_last_of_the_newest_rows_per_entity() -> None:
    groups, rows, superseded = store.plan_columns(
        ["a", "b", "a", "a", "a", 7, "7"],
        [10, 10, 12, 11, 12, 1, 1],
        {"v": [1, 2, 3, 4, 5, 6, 7]},
        FS,
    )
    assert _planned(groups) == {
        ("rtml:fs:clicks:a", "v"): store.encode(5, 12),  # 12 twice: the later row
        ("rtml:fs:clicks:b", "v"): store.encode(2, 10),
        ("rtml:fs:clicks:7", "v"): store.encode(7, 1),  # 7 and "7" are one entity
    }
    assert (rows, superseded) == (7, 4)
    assert store.plan_columns([], [], {"v": []}, FS) == ([], 0, 0)
    assert store.plan_columns(["a"], [1], {}, FS) == ([], 1, 0)


def test_plan_columns_rejects_bad_columns_with_the_reason() -> None:
    with pytest.raises(ValueError, match="invalid entity id ''"):
        store.plan_columns(["a", ""], [1, 2], {"v": [1, 2]}, FS)
    with pytest.raises(ValueError, match="invalid entity id 1.5"):
        store.plan_columns(pd.Series([1.5]), [1], {"v": [1]}, FS)
    with pytest.raises(ValueError, match="invalid event time 1.5"):
        store.plan_columns(["a"], pd.Series([1.5]), {"v": [1]}, FS)
    with pytest.raises(ValueError, match="out of range"):
        store.plan_columns(["a", "b"], pd.Series([1, -(2**53)]), {"v": [1, 2]}, FS)
    with pytest.raises(ValueError, match="has 1 rows, not 2"):
        store.plan_columns(["a", "b"], [1, 2], {"v": [1]}, FS)
    with pytest.raises(ValueError, match="invalid feature name '_version'"):
        store.plan_columns(["a"], [1], {"_version": [1]}, FS)
    with pytest.raises(TypeError, match="feature 'v' of rtml:fs:clicks:b: unsupported"):
        store.plan_columns(["a", "b"], [1, 2], {"v": [1, [2]]}, FS)
    with RedisFeatureWriter("redis://127.0.0.1:1/0", FS) as writer:
        with pytest.raises(ValueError, match="row has no 'event_ms' column"):
            writer.write_batch(pd.DataFrame({"entity_id": ["u"], "a": [1]}))
        with pytest.raises(ValueError, match="duplicate columns"):
            writer.write_batch(
                pd.DataFrame([["u", 1, 1, 2]], columns=["entity_id", "event_ms", "a", "a"])
            )
        assert writer._thread is None  # nothing was sent


def test_group_writes_splits_a_key_by_event_time() -> None:
    writes, _ = store.plan_writes(
        [FeatureRow("a", 10, {"x": 1, "y": 2}), FeatureRow("a", 12, {"y": 3, "z": "ü"})], FS
    )
    groups = store.group_writes(writes)
    assert [(g.key, g.event_ms) for g in groups] == [
        ("rtml:fs:clicks:a", 10),
        ("rtml:fs:clicks:a", 12),
    ]
    assert _planned(groups) == {
        ("rtml:fs:clicks:a", "x"): store.encode(1, 10),
        ("rtml:fs:clicks:a", "y"): store.encode(3, 12),
        ("rtml:fs:clicks:a", "z"): store.encode("ü", 12),
    }


def test_script_call_is_one_resp_command() -> None:
    writes = [
        store.KeyWrite("rtml:fs:c:ü", {"f": store.encode("✓", 5)}),
        store.KeyWrite("rtml:fs:c:b", {"g": store.encode(1, -2)}),
    ]
    groups = store.group_writes(writes)
    payload = store.script_call("ab" * 20, groups, "3", 77, 0)
    head, rest = payload.split(b"\r\n", 1)
    assert head == b"*16"
    assert _bulks(rest) == [
        "EVALSHA", "ab" * 20, "2", "rtml:fs:c:ü", "rtml:fs:c:b", "3", "77", "0",
        "5", "1", "f", store.encode("✓", 5), "-2", "1", "g", store.encode(1, -2),
    ]  # fmt: skip


def test_split_batches() -> None:
    assert store.split_batches(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert store.split_batches(list(range(6)), 3) == [[0, 1, 2], [3, 4, 5]]
    assert store.split_batches([], 3) == []
    assert store.split_batches([1], 500) == [[1]]
    with pytest.raises(ValueError):
        store.split_batches([1], 0)


# -- retries ---------------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    s = WriterSettings(backoff_base_s=0.1, backoff_max_s=1.0)
    ceilings = [store.backoff_delay(attempt, s, 1.0) for attempt in range(1, 8)]
    assert ceilings == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    assert store.backoff_delay(3, s, 0.0) == pytest.approx(0.2)  # half the ceiling
    assert store.backoff_delay(10_000, s, 0.5) == pytest.approx(0.75)  # no overflow
    with pytest.raises(ValueError):
        store.backoff_delay(0, s, 0.5)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (redis.exceptions.ConnectionError("refused"), ErrorKind.RETRY),
        (redis.exceptions.BusyLoadingError("LOADING Redis is loading"), ErrorKind.RETRY),
        (redis.exceptions.TimeoutError("timeout"), ErrorKind.RETRY),
        (TimeoutError(), ErrorKind.RETRY),
        (ConnectionRefusedError(), ErrorKind.RETRY),
        (redis.exceptions.ResponseError("BUSY Redis is busy running a script"), ErrorKind.RETRY),
        (redis.exceptions.ReadOnlyError("READONLY You can't write"), ErrorKind.RETRY),
        (redis.exceptions.OutOfMemoryError("OOM command not allowed"), ErrorKind.RETRY),
        (redis.exceptions.ResponseError("MISCONF Errors writing to disk"), ErrorKind.RETRY),
        (redis.exceptions.NoScriptError("NOSCRIPT No matching script"), ErrorKind.RELOAD_SCRIPT),
        (redis.exceptions.ResponseError("WRONGTYPE Operation against a key"), ErrorKind.FATAL),
        (redis.exceptions.ResponseError("ERR rtml online store: bad"), ErrorKind.FATAL),
        (redis.exceptions.AuthenticationError("invalid password"), ErrorKind.FATAL),
        (redis.exceptions.NoPermissionError("NOPERM"), ErrorKind.FATAL),
        (ValueError("bug"), ErrorKind.FATAL),
    ],
    ids=lambda x: type(x).__name__ if isinstance(x, BaseException) else str(x),
)
def test_classify(error: BaseException, kind: ErrorKind) -> None:
    assert store.classify(error) is kind


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        ("OOM command not allowed when used memory > 'maxmemory'.", ErrorKind.RETRY),
        ("READONLY You can't write against a read only replica.", ErrorKind.RETRY),
        ("LOADING Redis is loading the dataset in memory", ErrorKind.RETRY),
        ("BUSY Redis is busy running a script.", ErrorKind.RETRY),
        ("NOSCRIPT No matching script.", ErrorKind.RELOAD_SCRIPT),
        ("WRONGTYPE Operation against a key holding the wrong kind of value", ErrorKind.FATAL),
        ("ERR rtml online store: value for b is not encoded", ErrorKind.FATAL),
    ],
)
def test_classify_errors_as_redis_py_parses_them(reply: str, kind: ErrorKind) -> None:
    """redis-py strips some codes off the message (OOM, READONLY): the class still tells."""
    from redis._parsers.base import BaseParser

    assert store.classify(BaseParser.parse_error(reply)) is kind


def test_writer_settings_are_validated() -> None:
    for bad in ({"batch_size": 0}, {"max_in_flight": 0}, {"timeout_s": 0}, {"retry_deadline_s": 0}):
        with pytest.raises(ValueError):
            WriterSettings(**bad)  # type: ignore[arg-type]


# -- the writer without a server -------------------------------------------------------------------


def test_writer_without_rows_sends_nothing_and_pickles_as_configuration() -> None:
    writer = RedisFeatureWriter("redis://127.0.0.1:1/0", FS, WriterSettings(batch_size=7))
    stats = writer.write_batch([])
    assert (stats.rows, stats.keys, stats.retries) == (0, 0, 0)
    assert writer._thread is None  # no loop started for nothing
    clone = pickle.loads(pickle.dumps(writer))
    assert (clone.url, clone.featureset, clone.settings) == (writer.url, FS, writer.settings)
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        writer.write_batch([FeatureRow("u", 1, {"a": 1})])


def test_bad_rows_raise_before_anything_is_sent() -> None:
    with RedisFeatureWriter("redis://127.0.0.1:1/0", FS) as writer:
        with pytest.raises(TypeError):
            writer.write_batch([FeatureRow("u", 1, {"a": object()})])
        assert writer._thread is None


@pytest.mark.timeout(30)
def test_writer_retries_until_its_deadline_when_nothing_listens() -> None:
    settings = WriterSettings(timeout_s=0.5, backoff_base_s=0.01, backoff_max_s=0.05,
                              retry_deadline_s=0.5)  # fmt: skip
    threads_before = threading.active_count()
    url = f"redis://127.0.0.1:{free_port()}/0"
    with (
        RedisFeatureWriter(url, FS, settings) as writer,
        pytest.raises(store.OnlineStoreUnavailable, match="still failing after 0.5 s"),
    ):
        writer.write_batch([FeatureRow("u", 1, {"a": 1})])
    assert threading.active_count() == threads_before  # close() stopped the loop thread


# -- reading ---------------------------------------------------------------------------------------


def test_parse_features_types_ages_and_metadata() -> None:
    raw = {
        b"count": store.encode(3, T0 - 1500).encode(),
        b"ratio": store.encode(0.1, T0 - 60_000).encode(),
        b"label": store.encode(None, T0).encode(),
        b"_version": b"3",
        b"_updated_ms": str(T0 - 100).encode(),
    }
    online = store.parse_features("clicks", "u", raw, 59_000, read_ms=T0)
    assert online is not None
    assert online.values == {"count": 3, "label": None, "ratio": 0.1}
    assert list(online.features) == ["count", "label", "ratio"]  # sorted
    assert online.features["count"] == store.FeatureValue(3, T0 - 1500, 1500)
    assert (online.version, online.updated_ms, online.ttl_ms) == ("3", T0 - 100, 59_000)
    assert store.parse_features("clicks", "u", {}, -2, read_ms=T0) is None
    no_ttl = store.parse_features("clicks", "u", {"a": store.encode(1, T0)}, -1, read_ms=T0)
    assert no_ttl is not None and no_ttl.ttl_ms is None and no_ttl.version is None
    with pytest.raises(ValueError, match="rtml:fs:clicks:u field a"):
        store.parse_features("clicks", "u", {"a": "garbage"}, -1, read_ms=T0)


def test_render_features_as_table_and_json() -> None:
    online = OnlineFeatures(
        "clicks", "u", "3", T0 - 2000, 3_600_000, T0,
        {"count": store.FeatureValue(3, T0 - 1500, 1500),
         "label": store.FeatureValue("x", T0 - 90_000, 90_000)},
    )  # fmt: skip
    table = store.render_features(online)
    assert table.splitlines()[0] == (
        "rtml:fs:clicks:u  version 3  written 2.0 s ago  expires in 60.0 min"
    )
    assert "count" in table and "2025-11-21 05:20:08.500" in table and "1.5 s" in table
    assert '"x"' in table and "str" in table and "90.0 s" in table
    parsed = json.loads(store.render_features(online, as_json=True))
    assert parsed["key"] == "rtml:fs:clicks:u"
    assert parsed["features"]["count"] == {"value": 3, "event_ms": T0 - 1500, "age_ms": 1500}
    assert parsed["ttl_ms"] == 3_600_000 and parsed["version"] == "3"


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0 ms"),
        (999, "999 ms"),
        (1500, "1.5 s"),
        (90_000, "90.0 s"),
        (150_000, "2.5 min"),
        (7_200_000, "2.0 h"),
        (3 * 86_400_000, "3.0 d"),
        (-1500, "-1.5 s"),
    ],
)
def test_format_duration(ms: int, text: str) -> None:
    assert store.format_duration(ms) == text


def test_features_get_command_reports_unreachable_redis() -> None:
    with pytest.raises(RuntimeError, match="reading rtml:fs:clicks:u from"):
        store.features_get_command(
            "clicks", "u", redis_url=f"redis://127.0.0.1:{free_port()}/0", out=io.StringIO()
        )
