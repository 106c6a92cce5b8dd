"""The online store against a real redis-server started by rtml's own stack (Redis only).

Newest wins in Lua exactly as in Python, replays change nothing, late events lose, partial
updates, TTLs, throughput, a Redis restart in the middle of a batch without a lost update, and
reading typed values back (Python API and `rtml features get`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import redis
import redis.asyncio
from ephemeral import ephemeral_stack_settings

from rtml import online_store as store
from rtml.online_store import (
    FeatureRow,
    FeatureSet,
    OnlineStoreError,
    Outcome,
    RedisFeatureWriter,
    WriterSettings,
)
from rtml.stack import Stack

pytestmark = pytest.mark.integration

T0 = 1_763_702_410_000


@pytest.fixture(scope="module")
def redis_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Only Redis of a throw-away stack (AOF on, random port), started and stopped by rtml."""
    stack = Stack(ephemeral_stack_settings(tmp_path_factory.mktemp("redis")))
    try:
        stack.up(["redis"])
    except BaseException:
        stack.down()
        raise
    yield stack
    stack.down()


@pytest.fixture
def client(redis_stack: Stack) -> Iterator[redis.Redis]:
    """A client on an empty database (and an empty script cache)."""
    connection = redis.Redis.from_url(redis_stack.settings.redis_url)
    connection.flushdb()
    connection.script_flush()
    yield connection
    connection.close()


def writer(stack: Stack, featureset: FeatureSet, **settings: object) -> RedisFeatureWriter:
    options = WriterSettings(**settings)  # type: ignore[arg-type]
    return RedisFeatureWriter(stack.settings.redis_url, featureset, options)


def snapshot(client: redis.Redis, pattern: str = "rtml:fs:*") -> dict[bytes, bytes]:
    """DUMP of every matching key: the exact serialized value (not the TTL)."""
    return {key: client.dump(key) for key in sorted(client.scan_iter(pattern, count=1000))}


# -- the Lua script is the pure rule ---------------------------------------------------------------

# (stored value or None, incoming value); values are (event_ms, value) or a raw stored string
RULE_CASES = [
    (None, (10, 1.0)),
    ((10, 1.0), (11, 2.0)),
    ((10, 1.0), (11, 1.0)),
    ((10, 1.0), (10, 1.0)),
    ((10, 1.0), (10, 2.0)),
    ((10, 1), (10, 1.0)),
    ((10, 0.0), (10, -0.0)),
    ((10, 1.0), (9, 2.0)),
    ((10, 1.0), (9, 1.0)),
    ((-5, "a"), (-6, "b")),
    ((-6, "a"), (-5, "b")),
    ((0, None), (0, None)),
    ((0, None), (0, False)),
    ((9, "x"), (10, "x")),
    ((99, "x"), (100, "x")),  # 99 < 100 as numbers, not as strings
    ((100, "x"), (99, "y")),
    ((2**53 - 2, 1), (2**53 - 1, 2)),
    ((2**53 - 1, 1), (2**53 - 2, 2)),
    ((1, "ünï"), (1, "ünï")),
    ((1, float("nan")), (1, float("nan"))),
    ((1, float("inf")), (2, float("-inf"))),
]


def _encoded(case: tuple[int, object] | None) -> str | None:
    return None if case is None else store.encode(case[1], case[0])


def call_script(
    client: redis.Redis,
    groups: list[tuple[str, int, list[tuple[str, str]]]],
    version: str = "v7",
    updated_ms: str = "123",
    ttl_ms: str = "0",
) -> list:
    """NEWEST_WINS_LUA on (key, event time, [(feature, encoded value), ...]) groups, one call."""
    keys = [key for key, _, _ in groups]
    args: list[object] = [version, updated_ms, ttl_ms]
    for _, t, pairs in groups:
        args += [t, len(pairs), *(part for pair in pairs for part in pair)]
    return client.eval(store.NEWEST_WINS_LUA, len(keys), *keys, *args)


def test_lua_script_agrees_with_the_pure_rule(client: redis.Redis) -> None:
    sha = client.script_load(store.NEWEST_WINS_LUA)
    assert sha == store.NEWEST_WINS_SHA
    for index, (stored_case, incoming_case) in enumerate(RULE_CASES):
        key = store.feature_key("rule", index)
        stored, incoming = _encoded(stored_case), _encoded(incoming_case)
        assert incoming is not None
        if stored is not None:
            client.hset(key, "f", stored)
        expected = store.newest_wins(stored, incoming)

        counts = call_script(client, [(key, incoming_case[0], [("f", incoming)])])

        outcome = {0: Outcome.WRITE, 1: Outcome.UNCHANGED, 2: Outcome.STALE}[counts.index(1)]
        assert (outcome, sum(counts)) == (expected, 1), (stored_case, incoming_case)
        after = client.hget(key, "f").decode()
        assert after == (incoming if expected is Outcome.WRITE else stored)
        meta = client.hmget(key, "_version", "_updated_ms", "_event_ms")
        if expected is Outcome.WRITE:
            newest = max(incoming_case[0], stored_case[0] if stored_case else incoming_case[0])
            assert meta == [b"v7", b"123", str(newest).encode()]
        else:
            assert meta == [None, None, None]


def test_lua_script_applies_many_features_in_order_in_one_call(client: redis.Redis) -> None:
    key = store.feature_key("rule", "many")
    client.hset(key, mapping={"a": store.encode(1, 10), "b": store.encode(2, 10)})
    counts = call_script(
        client,
        [
            (key, 9, [("a", store.encode(5, 9))]),  # stale
            (key, 10, [("b", store.encode(2, 10))]),  # unchanged
            (key, 1, [("c", store.encode(3, 1))]),  # new
            (key, 0, [("c", store.encode(4, 0))]),  # older than the c just written: stale
            (key, 1, [("c", store.encode(6, 1))]),  # same time, new value: rewrite
        ],
        version="2", updated_ms="77", ttl_ms="60000",
    )  # fmt: skip
    assert counts == [2, 1, 2]
    assert client.hgetall(key) == {
        b"a": store.encode(1, 10).encode(),
        b"b": store.encode(2, 10).encode(),
        b"c": store.encode(6, 1).encode(),
        b"_version": b"2",
        b"_updated_ms": b"77",
        b"_event_ms": b"10",  # the newest of all features (a legacy hash: found by reading all)
    }
    assert 0 < client.pttl(key) <= 60_000


def test_lua_script_checks_every_key_before_writing_it(client: redis.Redis) -> None:
    """A key with an error is left untouched and reported; the call's other keys are written."""
    foreign = store.feature_key("rule", "foreign")
    client.hset(foreign, mapping={"a": "17", "b": store.encode(1, 1)})
    wrong_type = store.feature_key("rule", "string")
    client.set(wrong_type, "not a hash")
    bad_newest = store.feature_key("rule", "bad-newest")
    client.hset(bad_newest, mapping={"a": store.encode(1, 1), "_event_ms": "soon"})
    before = {key: client.dump(key) for key in (foreign, wrong_type, bad_newest)}
    good = store.feature_key("rule", "good")
    fresh = store.feature_key("rule", "fresh")

    reply = call_script(
        client,
        [
            (good, 2, [("a", store.encode(1, 2))]),
            (foreign, 2, [("b", store.encode(2, 2)), ("a", store.encode(1, 2))]),
            (foreign, 3, [("b", "2")]),
            (foreign, 3, [("b", store.encode(2, 4))]),  # another event time than its group's
            (foreign, 3, [("b", store.encode(2, 3)), ("b", store.encode(3, 3))]),
            (wrong_type, 1, [("a", store.encode(1, 1))]),
            (bad_newest, 2, [("a", store.encode(1, 2))]),
            (fresh, 5, [("a", store.encode(1, 5))]),
        ],
    )

    assert reply[:3] == [2, 0, 0]
    errors = dict(zip(reply[3::2], reply[4::2], strict=True))
    assert sorted(errors) == [2, 3, 4, 5, 6, 7]
    assert all(isinstance(error, redis.exceptions.ResponseError) for error in errors.values())
    assert "field a does not hold an rtml feature value" in str(errors[2])
    assert "value for b is not encoded with event time 3" in str(errors[3])
    assert "value for b is not encoded with event time 3" in str(errors[4])
    assert "feature b appears twice" in str(errors[5])
    assert str(errors[6]).startswith("WRONGTYPE")
    assert "_event_ms does not hold an event time" in str(errors[7])
    assert {key: client.dump(key) for key in before} == before
    assert client.hget(good, "a") == store.encode(1, 2).encode()
    assert client.hget(fresh, "a") == store.encode(1, 5).encode()
    # a malformed call is refused as a whole, before anything is written
    for args in (["1", "1"], ["1", "1", "0", "5", "2", "a", store.encode(1, 5)], ["1", "1", "x"]):
        with pytest.raises(redis.exceptions.ResponseError, match="expected version"):
            client.eval(store.NEWEST_WINS_LUA, 1, store.feature_key("rule", "x"), *args)
    assert not client.exists(store.feature_key("rule", "x"))
    with pytest.raises(ValueError):  # the pure rule refuses the same stored value
        store.newest_wins("17", store.encode(1, 1))


# The script before it took many keys per call (one key, any event times): the reference.
SINGLE_KEY_LUA = """\
-- rtml online store: newest event wins, per feature, atomically (mirrors online_store.newest_wins)
local key = KEYS[1]
local n = (#ARGV - 3) / 2
if n < 1 or n ~= math.floor(n) then
  return redis.error_reply('ERR rtml online store: expected version, updated_ms, ttl_ms, pairs')
end
local pattern = '^{"t":(%-?%d+),"v":'
local names = {}
for i = 1, n do names[i] = ARGV[2 + 2 * i] end
local stored = redis.call('HMGET', key, unpack(names))
local current = {}
for i = 1, n do
  if stored[i] then
    local t = string.match(stored[i], pattern)
    if not t then
      return redis.error_reply('ERR rtml online store: ' .. key .. ' field ' .. names[i] ..
        ' does not hold an rtml feature value')
    end
    current[names[i]] = {stored[i], tonumber(t)}
  end
end
local written, unchanged, stale = 0, 0, 0
local updates = {}
for i = 1, n do
  local name, value = names[i], ARGV[3 + 2 * i]
  local t = string.match(value, pattern)
  if not t then
    return redis.error_reply('ERR rtml online store: value for ' .. name .. ' is not encoded')
  end
  t = tonumber(t)
  local cur = current[name]
  if cur == nil or t > cur[2] or (t == cur[2] and value ~= cur[1]) then
    current[name] = {value, t}
    updates[#updates + 1] = name
    updates[#updates + 1] = value
    written = written + 1
  elseif value == cur[1] then
    unchanged = unchanged + 1
  else
    stale = stale + 1
  end
end
if written > 0 then
  redis.call('HSET', key, '_version', ARGV[1], '_updated_ms', ARGV[2], unpack(updates))
  if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', key, ARGV[3]) end
end
return {written, unchanged, stale}
"""


def test_many_keys_per_call_equal_one_key_per_call_the_old_script_and_the_rule(
    client: redis.Redis,
) -> None:
    """Random batches (ties, replays, late values, partial rows) applied four ways agree.

    The hashes of the new script also hold `_event_ms`, the newest event time of their features.
    """
    rng = random.Random(7)
    fs = {name: FeatureSet(name, version=3) for name in ("many", "one", "old")}
    model: dict[tuple[str, str], str] = {}  # (entity, feature) -> encoded value: the pure rule
    totals = {name: [0, 0, 0] for name in fs}
    for batch in range(40):
        rows = [
            FeatureRow(
                f"e{rng.randrange(12)}",
                rng.randrange(8) + batch // 4,  # event times move on, with much overlap
                {f"f{f}": rng.choice([1, 2, 2.0, "x", None]) for f in rng.sample(range(5), 3)},
            )
            for _ in range(rng.randrange(1, 30))
        ]
        for row in rows:
            for name, value in row.values.items():
                encoded = store.encode(value, row.event_ms)
                if (
                    store.newest_wins(model.get((str(row.entity_id), name)), encoded)
                    is Outcome.WRITE
                ):
                    model[(str(row.entity_id), name)] = encoded
        for name in ("many", "one"):
            writes, _ = store.plan_writes(rows, fs[name])
            groups = store.group_writes(writes)
            calls = [groups] if name == "many" else [[group] for group in groups]
            for call in calls:
                payload = store.script_call(store.NEWEST_WINS_SHA, call, "3", 1, 0)
                client.script_load(store.NEWEST_WINS_LUA)
                reply = client.execute_command(*_resp_args(payload))
                assert len(reply) == 3, reply
                totals[name] = [a + b for a, b in zip(totals[name], reply, strict=True)]
        writes, _ = store.plan_writes(rows, fs["old"])
        for write in writes:
            reply = client.eval(SINGLE_KEY_LUA, 1, write.key, "3", "1", "0", *write.args())
            totals["old"] = [a + b for a, b in zip(totals["old"], reply, strict=True)]

    assert totals["many"] == totals["one"] == totals["old"]
    assert totals["many"][1] > 0 and totals["many"][2] > 0  # replays and stale values happened
    expected: dict[str, dict[str, str]] = {}
    for (entity, name), encoded in model.items():
        expected.setdefault(entity, {})[name] = encoded
    for name in fs:
        for entity, features in expected.items():
            stored = {
                field.decode(): value.decode()
                for field, value in client.hgetall(store.feature_key(name, entity)).items()
            }
            assert stored.pop("_version") == "3" and stored.pop("_updated_ms") == "1"
            if name != "old":
                newest = max(store.stored_event_ms(value) for value in features.values())
                assert stored.pop("_event_ms") == str(newest), (name, entity)
            assert stored == features, (name, entity)


def test_hashes_written_before_event_ms_existed_are_upgraded(client: redis.Redis) -> None:
    """`_event_ms` of an old hash is the newest of all its features, not of those written."""
    key = store.feature_key("legacy", "e")
    client.eval(SINGLE_KEY_LUA, 1, key, "1", "1", "0",
                "a", store.encode("a10", 10), "b", store.encode("b5", 5))  # fmt: skip
    assert call_script(client, [(key, 6, [("b", store.encode("b6", 6))])]) == [1, 0, 0]
    assert client.hget(key, "_event_ms") == b"10"
    # a newer event than b, older than a: compared feature by feature, not written blindly
    assert call_script(client, [(key, 8, [("a", store.encode("a8", 8))])]) == [0, 0, 1]
    assert call_script(client, [(key, 11, [("a", store.encode("a11", 11))])]) == [1, 0, 0]
    assert client.hmget(key, "a", "b", "_event_ms") == [
        store.encode("a11", 11).encode(), store.encode("b6", 6).encode(), b"11",
    ]  # fmt: skip


def _resp_args(payload: bytes) -> list[bytes]:
    """The arguments of one RESP command (what `script_call` built), parsed back."""
    lines = payload.split(b"\r\n")
    count = int(lines[0][1:])
    args, at = [], 1
    while len(args) < count:
        size = int(lines[at][1:])
        value = b"\r\n".join(lines[at + 1 :])[:size]
        args.append(value)
        at += 1 + value.count(b"\r\n") + 1
    return args


# -- the writer ------------------------------------------------------------------------------------


def rows_for(count: int, start_ms: int = T0, prefix: str = "u") -> list[dict[str, object]]:
    return [
        {"entity_id": f"{prefix}{i}", "event_ms": start_ms + i, "clicks": i, "ratio": i / 7,
         "label": f"l{i % 3}", "active": i % 2 == 0, "missing": None}
        for i in range(count)
    ]  # fmt: skip


def test_replay_leaves_redis_byte_for_byte_unchanged(
    redis_stack: Stack, client: redis.Redis
) -> None:
    fs = FeatureSet("replay", version=1, ttl_ms=600_000)
    rows = rows_for(2000)
    with writer(redis_stack, fs, batch_size=128) as w:
        first = w.write_batch(rows)
        assert (first.rows, first.keys, first.written) == (2000, 2000, 2000 * 5)
        before = snapshot(client)
        ttl_before = {key: client.pttl(key) for key in before}
        time.sleep(0.05)

        replay = w.write_batch(rows)

    assert (replay.written, replay.unchanged, replay.stale) == (0, 2000 * 5, 0)
    assert snapshot(client) == before
    for key, ttl in ttl_before.items():
        assert 0 < client.pttl(key) <= ttl - 40  # still counting down: not refreshed


def test_late_events_never_overwrite_fresher_values(
    redis_stack: Stack, client: redis.Redis
) -> None:
    fs = FeatureSet("late", version=1)
    with writer(redis_stack, fs) as w:
        w.write_batch([FeatureRow("e", T0, {"x": 1.5, "y": "new"})])
        late = w.write_batch([FeatureRow("e", T0 - 1, {"x": 99.0, "y": "old"})])
        assert (late.written, late.stale) == (0, 2)
        refire = w.write_batch([FeatureRow("e", T0, {"x": 1.75})])  # same window, corrected
        assert refire.written == 1
        # a backtest replaying an older range with another version changes nothing either
    with writer(redis_stack, FeatureSet("late", version=2)) as backtest:
        assert backtest.write_batch([FeatureRow("e", T0 - 60_000, {"x": 0.0})]).stale == 1

    online = store.get_features(client, "late", "e", now_ms=T0 + 1000)
    assert online is not None
    assert online.values == {"x": 1.75, "y": "new"}
    assert online.version == "1"


def test_partial_updates_keep_the_newest_value_per_feature(
    redis_stack: Stack, client: redis.Redis
) -> None:
    with writer(redis_stack, FeatureSet("partial", version="a")) as w:
        w.write_batch([FeatureRow("e", 10, {"a": 1, "b": 1})])
    with writer(redis_stack, FeatureSet("partial", version="b")) as w:
        stats = w.write_batch([FeatureRow("e", 20, {"b": 2}), FeatureRow("e", 5, {"a": 0, "c": 3})])
        assert (stats.written, stats.stale) == (2, 1)

    online = store.get_features(client, "partial", "e", now_ms=30)
    assert online is not None
    assert {n: (f.value, f.event_ms) for n, f in online.features.items()} == {
        "a": (1, 10), "b": (2, 20), "c": (3, 5),
    }  # fmt: skip
    assert online.version == "b"  # the version of the newest write that changed the hash


def test_ttl_is_set_only_when_the_feature_set_has_one(
    redis_stack: Stack, client: redis.Redis
) -> None:
    with writer(redis_stack, FeatureSet("ttl", ttl_ms=30_000)) as w:
        w.write_batch([FeatureRow("e", 1, {"a": 1})])
        assert 29_000 < client.pttl(store.feature_key("ttl", "e")) <= 30_000
        client.pexpire(store.feature_key("ttl", "e"), 5_000)
        w.write_batch([FeatureRow("e", 2, {"a": 1})])  # a change: the TTL starts again
        assert client.pttl(store.feature_key("ttl", "e")) > 29_000
    with writer(redis_stack, FeatureSet("no-ttl")) as w:
        w.write_batch([FeatureRow("e", 1, {"a": 1})])
    assert client.pttl(store.feature_key("no-ttl", "e")) == -1


def test_20k_rows_are_written_and_counted(redis_stack: Stack, client: redis.Redis) -> None:
    fs = FeatureSet("bulk", version=1, ttl_ms=3_600_000)
    rows = rows_for(20_000)
    with writer(redis_stack, fs) as w:
        stats = w.write_batch(rows)
        replay = w.write_batch(rows)

    print(
        f"\nonline store: {stats.rows} rows x 5 features in {stats.seconds:.2f} s = "
        f"{stats.rows_per_s:,.0f} rows/s ({stats.rows_per_s * 5:,.0f} values/s); "
        f"replay {replay.rows_per_s:,.0f} rows/s"
    )
    assert (stats.rows, stats.keys, stats.written, stats.retries) == (20_000, 20_000, 100_000, 0)
    assert replay.unchanged == 100_000
    assert sum(1 for _ in client.scan_iter("rtml:fs:bulk:*", count=1000)) == 20_000
    for i in (0, 1, 9_999, 19_999):
        online = store.get_features(client, "bulk", f"u{i}")
        assert online is not None
        assert online.values == {
            "clicks": i, "ratio": i / 7, "label": f"l{i % 3}", "active": i % 2 == 0,
            "missing": None,
        }  # fmt: skip


def test_script_cache_flush_is_survived(redis_stack: Stack, client: redis.Redis) -> None:
    with writer(redis_stack, FeatureSet("noscript")) as w:
        first = w.write_batch([FeatureRow("e", 1, {"a": 1})])
        assert first.retries == 0  # the writer loads the script when it connects
        client.script_flush()  # as a restart does: the script cache is not persisted
        again = w.write_batch([FeatureRow(f"e{i}", 2, {"a": 2}) for i in range(50)])
    assert (again.written, again.retries) == (50, 1)


def test_non_retryable_errors_raise(redis_stack: Stack, client: redis.Redis) -> None:
    client.set(store.feature_key("fatal", "string"), "not a hash")
    client.hset(store.feature_key("fatal", "foreign"), "a", "17")
    with writer(redis_stack, FeatureSet("fatal"), retry_deadline_s=5) as w:
        with pytest.raises(OnlineStoreError, match="WRONGTYPE"):
            w.write_batch([FeatureRow("ok", 1, {"a": 1}), FeatureRow("string", 1, {"a": 1})])
        with pytest.raises(OnlineStoreError, match="does not hold an rtml feature value"):
            w.write_batch([FeatureRow("foreign", 1, {"a": 1})])


def test_an_error_in_one_key_leaves_the_other_keys_of_the_call_written(
    redis_stack: Stack, client: redis.Redis
) -> None:
    bad = store.feature_key("mixed", "e150")
    client.set(bad, "not a hash")
    rows = [FeatureRow(f"e{i}", T0, {"a": i, "b": "x"}) for i in range(300)]
    with (
        writer(redis_stack, FeatureSet("mixed"), batch_size=500) as w,
        pytest.raises(OnlineStoreError, match="Redis refused the write of rtml:fs:mixed:e150"),
    ):
        w.write_batch(rows)
    assert client.get(bad) == b"not a hash"
    for i in (0, 149, 151, 299):
        online = store.get_features(client, "mixed", f"e{i}")
        assert online is not None and online.values == {"a": i, "b": "x"}


@pytest.mark.timeout(120)
def test_out_of_memory_is_retried_until_redis_has_room(
    redis_stack: Stack, client: redis.Redis
) -> None:
    """OOM comes back per key from inside the script: those keys wait and are written later."""
    rows = [FeatureRow(f"e{i}", T0, {"a": i}) for i in range(50)]
    result: dict[str, object] = {}

    def write() -> None:
        with writer(redis_stack, FeatureSet("oom"), backoff_max_s=0.2) as w:
            result["stats"] = w.write_batch(rows)

    client.config_set("maxmemory", "1")  # every write is refused: OOM
    try:
        thread = threading.Thread(target=write, name="writer")
        thread.start()
        time.sleep(1.5)
        assert thread.is_alive(), "write_batch returned while Redis refused every write"
        assert client.dbsize() == 0
    finally:
        client.config_set("maxmemory", "0")
    thread.join(timeout=60)
    stats = result["stats"]
    assert isinstance(stats, store.WriteStats)
    assert stats.retries > 1 and stats.written == 50
    assert client.dbsize() == 50


def test_dataframes_and_dicts_are_written_alike(redis_stack: Stack, client: redis.Redis) -> None:
    rows = [*rows_for(500), *rows_for(500, start_ms=T0 - 1), *rows_for(300, start_ms=T0 + 7)]
    frame = pd.DataFrame(rows)
    with writer(redis_stack, FeatureSet("frame", ttl_ms=60_000)) as w:
        from_frame = w.write_batch(frame)
    with writer(redis_stack, FeatureSet("dicts", ttl_ms=60_000)) as w:
        from_dicts = w.write_batch(rows)
    assert dataclasses.replace(from_frame, seconds=0, calls=0) == dataclasses.replace(
        from_dicts, seconds=0, calls=0
    )
    assert (from_frame.rows, from_frame.keys, from_frame.written) == (1300, 500, 2500)
    for i in range(500):
        by_frame = client.hgetall(store.feature_key("frame", f"u{i}"))
        by_dicts = client.hgetall(store.feature_key("dicts", f"u{i}"))
        del by_frame[b"_updated_ms"], by_dicts[b"_updated_ms"]
        assert by_frame == by_dicts


@pytest.mark.timeout(300)
def test_redis_restart_during_a_batch_loses_no_update(
    redis_stack: Stack, client: redis.Redis
) -> None:
    fs = FeatureSet("restart", version=1)
    rows = rows_for(150_000, prefix="r")
    result: dict[str, object] = {}

    def write() -> None:
        try:
            with writer(redis_stack, fs, batch_size=200, max_in_flight=2, timeout_s=2.0,
                        backoff_max_s=0.5) as w:  # fmt: skip
                result["stats"] = w.write_batch(rows)
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            result["error"] = error

    thread = threading.Thread(target=write, name="writer")
    thread.start()
    deadline = time.monotonic() + 60
    while client.dbsize() < 5_000 and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.01)
    written_before = client.dbsize()
    assert thread.is_alive(), "the batch finished before Redis could be stopped: use more rows"

    assert redis_stack.down(["redis"]) == ["redis"]
    time.sleep(2)
    assert thread.is_alive(), "write_batch returned while Redis was down"
    assert redis_stack.up(["redis"]) == ["redis"]
    thread.join(timeout=240)

    assert not thread.is_alive()
    assert "error" not in result, result.get("error")
    stats = result["stats"]
    assert isinstance(stats, store.WriteStats)
    print(
        f"\nrestart: {written_before} keys before the stop, {stats.retries} retries, "
        f"{stats.seconds:.1f} s for {stats.rows} rows"
    )
    assert stats.retries > 0
    assert stats.written + stats.unchanged == 150_000 * 5  # resent pipelines are unchanged
    fresh = redis.Redis.from_url(redis_stack.settings.redis_url)
    try:
        assert fresh.dbsize() == 150_000
        pipe = fresh.pipeline(transaction=False)
        for row in rows:
            pipe.hget(store.feature_key("restart", row["entity_id"]), "clicks")  # type: ignore[arg-type]
        stored = pipe.execute()
    finally:
        fresh.close()
    expected = [store.encode(row["clicks"], row["event_ms"]).encode() for row in rows]  # type: ignore[arg-type]
    missing = [row["entity_id"] for row, got, want in zip(rows, stored, expected, strict=True)
               if got != want]  # fmt: skip
    assert missing == [], f"{len(missing)} rows lost, e.g. {missing[:5]}"


# -- reading ---------------------------------------------------------------------------------------


def test_get_features_returns_typed_values_and_ages(
    redis_stack: Stack, client: redis.Redis
) -> None:
    fs = FeatureSet("serve", version=4, ttl_ms=3_600_000)
    now = store.wall_clock_ms()
    with writer(redis_stack, fs) as w:
        w.write_batch([
            {"entity_id": "user:1", "event_ms": now - 5_000, "clicks": 12, "ratio": 0.1,
             "label": "gold", "active": True, "last": None, "big": 2**62},
            {"entity_id": "user:1", "event_ms": now - 1_000, "ratio": 1 / 3},
        ])  # fmt: skip

    online = store.get_features(client, "serve", "user:1", now_ms=now)
    assert online is not None
    assert online.values == {
        "active": True, "big": 2**62, "clicks": 12, "label": "gold", "last": None, "ratio": 1 / 3,
    }  # fmt: skip
    assert [type(v) for v in online.values.values()] == [bool, int, int, str, type(None), float]
    assert online.features["clicks"].age_ms == 5_000
    assert online.features["ratio"].age_ms == 1_000
    assert online.version == "4"
    assert online.updated_ms is not None and now - 1000 < online.updated_ms <= store.wall_clock_ms()
    assert online.ttl_ms is not None and 3_500_000 < online.ttl_ms <= 3_600_000
    assert store.get_features(client, "serve", "nobody") is None

    async def read_async() -> store.OnlineFeatures | None:
        async_client = redis.asyncio.Redis.from_url(redis_stack.settings.redis_url)
        try:
            return await store.get_features_async(async_client, "serve", "user:1", now_ms=now)
        finally:
            await async_client.aclose()

    assert dataclasses.replace(asyncio.run(read_async()), ttl_ms=None) == dataclasses.replace(
        online, ttl_ms=None
    )

    decoded = redis.Redis.from_url(redis_stack.settings.redis_url, decode_responses=True)
    try:
        as_text = store.get_features(decoded, "serve", "user:1", now_ms=now)
        assert as_text is not None and as_text.features == online.features
    finally:
        decoded.close()


def test_features_get_command_prints_table_and_json(
    redis_stack: Stack, client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    now = store.wall_clock_ms()
    with writer(redis_stack, FeatureSet("cli", version=2, ttl_ms=86_400_000)) as w:
        w.write_batch([FeatureRow("u1", now - 2_500, {"clicks": 3, "ratio": 0.25})])
    url = redis_stack.settings.redis_url

    table = io.StringIO()
    assert store.features_get_command("cli", "u1", redis_url=url, out=table) == 0
    lines = table.getvalue().splitlines()
    assert lines[0].startswith("rtml:fs:cli:u1  version 2  written ")
    assert "expires in 24.0 h" in lines[0] or "expires in 23.9 h" in lines[0]
    assert lines[2].split()[:3] == ["clicks", "3", "int"]
    assert lines[3].split()[:3] == ["ratio", "0.25", "float"]

    as_json = io.StringIO()
    assert store.features_get_command("cli", "u1", redis_url=url, as_json=True, out=as_json) == 0
    parsed = json.loads(as_json.getvalue())
    assert parsed["features"]["clicks"]["value"] == 3
    assert 2_500 <= parsed["features"]["clicks"]["age_ms"] < 60_000

    missing = io.StringIO()
    code = store.features_get_command("cli", "nobody", redis_url=url, as_json=True, out=missing)
    assert code == 3
    assert missing.getvalue().strip() == "null"
    assert "no online features for rtml:fs:cli:nobody" in capsys.readouterr().err


def test_key_layout_is_readable_with_redis_cli(redis_stack: Stack, client: redis.Redis) -> None:
    import shutil
    import subprocess

    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli not installed")
    with writer(redis_stack, FeatureSet("readable", version=1, ttl_ms=60_000)) as w:
        w.write_batch([FeatureRow("u1", T0, {"clicks": 3, "label": "gold"})])
    port = str(redis_stack.settings.redis_port)
    out = subprocess.run(
        [cli, "-p", port, "--raw", "HGETALL", "rtml:fs:readable:u1"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.splitlines()  # fmt: skip
    fields = dict(zip(out[::2], out[1::2], strict=True))
    assert fields["clicks"] == '{"t":1763702410000,"v":3}'
    assert fields["label"] == '{"t":1763702410000,"v":"gold"}'
    assert fields["_version"] == "1"


def test_readme_example_works(redis_stack: Stack, client: redis.Redis, tmp_path: Path) -> None:
    # what the README shows, line for line (with this test's Redis URL)
    from rtml.online_store import FeatureSet, RedisFeatureWriter, get_features

    url = redis_stack.settings.redis_url
    clicks = FeatureSet("clicks", version=3, ttl_ms=24 * 3600 * 1000, entity_column="user_id",
                        event_time_column="window_end")  # fmt: skip
    with RedisFeatureWriter(url, clicks) as writer_:
        writer_.write_batch([{"user_id": "u1", "window_end": 1763702410000, "clicks_5m": 12}])
    online = get_features(redis.Redis.from_url(url), "clicks", "u1")
    assert online is not None
    assert online.values == {"clicks_5m": 12}
