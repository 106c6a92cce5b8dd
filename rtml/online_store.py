"""The Redis online store: feature values per entity, newest event wins, readable with `redis-cli`.

Key layout (one Redis HASH per feature set and entity)::

    rtml:fs:<featureset>:<entity_id>          HASH, PEXPIRE = the feature set's TTL
        <feature>      {"t":<event_ms>,"v":<JSON value>}   one field per feature
        _version       feature set version of the newest write that changed the hash
        _updated_ms    writer's wall clock (epoch ms) of that write
        _event_ms      the newest event time of the hash's features

- `<featureset>` and feature names match `[A-Za-z0-9][A-Za-z0-9_.-]*` (at most 128 characters):
  no ':' in a feature set name, so a key splits unambiguously, and feature names can never collide
  with the `_`-prefixed metadata fields. `<entity_id>` is any non-empty string, written verbatim
  (it may itself contain ':'; it is everything after the third ':'). Integer ids are written in
  decimal, so 42 and "42" are the same entity. There are no `{hash tags}`: every key lands on its
  own Redis Cluster slot; a script call writes `WriterSettings.batch_size` keys, so on a Cluster
  set it to 1.
- A value is compact JSON with the event time first: `{"t":1763702410000,"v":0.25}`. Types
  survive: int (`3`), float (`3.0`, shortest repr, so it round-trips exactly), str, bool, null.
  Non-finite floats are written as `NaN`, `Infinity`, `-Infinity` (Python's and JavaScript's
  spelling; strict JSON parsers reject them).
- Newest wins, per feature, in one atomic Lua script (`NEWEST_WINS_LUA`, mirrored by the pure
  `newest_wins`): an incoming value replaces the stored one when its event time is newer, or equal
  with different bytes (a window that fires again with the same end time carries the corrected
  value); an identical value changes nothing; an older one is ignored. So replays after a recovery,
  late events and backtests never overwrite fresher values, and a replay leaves the hash
  byte-for-byte unchanged (its metadata and TTL included: they are only touched when a feature
  changed). An event newer than `_event_ms` is newer than every feature of the hash, so the script
  writes it without comparing feature by feature (the usual case of a stream, 2x less Redis CPU).
  Write feature fields only through the script, or that shortcut can overwrite a newer value.

Writing: `RedisFeatureWriter.write_batch(rows)` (or `write_columns` for a pandas UDF's columns)
is synchronous and returns only once Redis has acknowledged every row, so a Flink (pandas) UDF that
calls it loses nothing across checkpoints. Inside, rows are merged per entity (newest wins already
in the batch; for columns, vectorized: the entity's newest row), encoded straight into the RESP
arguments, split into sub-batches of keys, and each sub-batch is one EVALSHA of the script, sent
concurrently (bounded) from a private event loop thread. Connection errors, timeouts and OOM are
retried with exponential backoff and jitter, forever by default (the caller is blocked:
backpressure, never a dropped update); NOSCRIPT (an empty script cache after a Redis restart)
reloads the script; only non-retryable errors (a wrong key type, a script error, authentication)
raise `OnlineStoreError`. A key that fails inside a call leaves the call's other keys written.

Reading: `get_features(client, featureset, entity_id)` (or `get_features_async` with a
`redis.asyncio` client) returns the typed values, their event times and ages, the version and the
remaining TTL in one round trip; `rtml features get FEATURESET ENTITY_ID [--json]` prints the same.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import hashlib
import json
import logging
import math
import os
import random
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring as _json_str  # = json.dumps(str, ensure_ascii=False)
from typing import Any, TextIO, TypeAlias

import numpy as np
import pandas as pd
import redis
import redis.asyncio
import redis.exceptions

from rtml.loop_thread import start_loop_thread, stop_loop_thread

log = logging.getLogger(__name__)

Value: TypeAlias = int | float | str | bool | None

KEY_PREFIX = "rtml:fs:"
VERSION_FIELD = "_version"
UPDATED_FIELD = "_updated_ms"
EVENT_FIELD = "_event_ms"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
MAX_EVENT_MS = 2**53 - 1  # Lua numbers are doubles: event times compare exactly up to here
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MS = dt.timedelta(milliseconds=1)
# The stored form starts with the event time, so Lua finds it without decoding the JSON.
_EVENT_MS = re.compile(r'\{"t":(-?\d+),"v":')


class OnlineStoreError(RuntimeError):
    """Redis refused a write for a reason retrying cannot fix (wrong key type, script error...)."""


class OnlineStoreUnavailable(OnlineStoreError):
    """Redis did not come back before `WriterSettings.retry_deadline_s` (only with a deadline)."""


# -- key layout --------------------------------------------------------------------------------


def check_name(name: str, what: str = "feature set") -> str:
    """`name` if it is a valid feature set or feature name, else ValueError."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"invalid {what} name {name!r}: use letters, digits, '_', '.', '-' "
            "(not first: '_', '.', '-'), at most 128 characters"
        )
    return name


def entity_str(entity_id: object) -> str:
    """The entity id as written in the key: a non-empty string, or an integer in decimal."""
    if isinstance(entity_id, np.integer):
        entity_id = int(entity_id)
    if isinstance(entity_id, bool) or not isinstance(entity_id, str | int):
        raise ValueError(
            f"invalid entity id {entity_id!r} ({type(entity_id).__name__}): use a string or an int"
        )
    text = str(entity_id)
    if not text:
        raise ValueError("invalid entity id '': it must not be empty")
    return text


def feature_key(featureset: str, entity_id: str | int) -> str:
    """`rtml:fs:<featureset>:<entity_id>`, the HASH holding one entity's features."""
    return f"{KEY_PREFIX}{check_name(featureset)}:{entity_str(entity_id)}"


def parse_key(key: str | bytes) -> tuple[str, str]:
    """(featureset, entity_id) of a key made by `feature_key`."""
    text = key.decode() if isinstance(key, bytes) else key
    if not text.startswith(KEY_PREFIX):
        raise ValueError(f"{text!r} is not an rtml feature key ({KEY_PREFIX}<featureset>:<id>)")
    featureset, sep, entity_id = text[len(KEY_PREFIX) :].partition(":")
    if not sep or not entity_id or not NAME_PATTERN.fullmatch(featureset):
        raise ValueError(f"{text!r} is not an rtml feature key ({KEY_PREFIX}<featureset>:<id>)")
    return featureset, entity_id


# -- values ------------------------------------------------------------------------------------


def normalize_value(value: object) -> Value:
    """A feature value as a plain Python int, float, str, bool or None (numpy/pandas unboxed).

    pandas' missing markers (`pd.NA`, `pd.NaT`) become None; a float NaN stays NaN.
    """
    if value is None or isinstance(value, bool | str):
        return value  # type: ignore[return-value]
    if isinstance(value, int | float):
        return int(value) if isinstance(value, int) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if type(value).__name__ in ("NAType", "NaTType"):  # pandas' missing values
        return None
    raise TypeError(
        f"unsupported feature value {value!r} ({type(value).__name__}): features are int, float, "
        "str, bool or None (CAST decimals to DOUBLE, timestamps to epoch-ms BIGINT)"
    )


def event_ms(value: object) -> int:
    """An event time as epoch milliseconds: from an int, or a datetime (naive = UTC)."""
    if isinstance(value, np.integer):
        value = int(value)
    elif isinstance(value, np.datetime64):
        value = int(value.astype("datetime64[ms]").astype(np.int64))
    elif isinstance(value, dt.datetime):  # pandas.Timestamp too
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        value = (aware - _EPOCH) // _ONE_MS
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"invalid event time {value!r}: use epoch milliseconds or a datetime")
    if abs(value) > MAX_EVENT_MS:
        raise ValueError(f"event time {value} is out of range (|t| <= 2**53 - 1 ms)")
    return value


def encode(value: object, event_time_ms: int) -> str:
    """The stored form of one feature value: `{"t":<event_ms>,"v":<JSON value>}`."""
    return _encode(normalize_value(value), event_ms(event_time_ms))


def _encode(plain: Value, checked_ms: int) -> str:
    body = json.dumps(plain, ensure_ascii=False, separators=(",", ":"))
    return f'{{"t":{checked_ms},"v":{body}}}'


def decode(stored: str | bytes) -> tuple[Value, int]:
    """(value, event_ms) of a stored feature value; ValueError if it is not one."""
    text = stored.decode() if isinstance(stored, bytes) else stored
    prefix = _EVENT_MS.match(text)  # what the Lua script reads: both must agree
    try:
        parsed = json.loads(text) if prefix else None
    except ValueError:
        parsed = None
    if (
        not isinstance(parsed, dict)
        or set(parsed) != {"t", "v"}
        or parsed["t"] != int(prefix.group(1))  # type: ignore[union-attr]
        or isinstance(parsed["v"], list | dict)
    ):
        raise ValueError(f"not an rtml feature value: {text[:200]!r}")
    return parsed["v"], parsed["t"]


def stored_event_ms(stored: str | bytes) -> int:
    """The event time of a stored value, read the way the Lua script reads it (prefix match)."""
    text = stored.decode() if isinstance(stored, bytes) else stored
    match = _EVENT_MS.match(text)
    if match is None:
        raise ValueError(f"not an rtml feature value: {text[:200]!r}")
    return int(match.group(1))


# -- the newest-wins rule ------------------------------------------------------------------------


class Outcome(enum.StrEnum):
    WRITE = "write"  # no stored value, a newer event, or the same event time with another value
    UNCHANGED = "unchanged"  # byte-for-byte the stored value: nothing to do
    STALE = "stale"  # an older event: the stored value is fresher and stays


def newest_wins(stored: str | None, incoming: str) -> Outcome:
    """What the Lua script does with `incoming` (an encoded value) given the `stored` one.

    Equal event times with different bytes overwrite: a window that fires again (allowed
    lateness, an updated aggregate) carries the corrected value under the same event time, and a
    replay re-applies the same sequence, so it ends with the same value.
    """
    incoming_ms = stored_event_ms(incoming)
    if stored is None:
        return Outcome.WRITE
    stored_ms = stored_event_ms(stored)
    if incoming_ms > stored_ms or (incoming_ms == stored_ms and incoming != stored):
        return Outcome.WRITE
    if incoming == stored:
        return Outcome.UNCHANGED
    return Outcome.STALE


# One script call writes many keys (`WriterSettings.batch_size`), each exactly as if alone.
# KEYS: the hashes. ARGV: version, updated_ms, ttl_ms (0: none), then for each key, in KEYS order:
# its event time t, a count n, and n (feature, value) pairs, each value encoded with event time t
# (a key may appear again with another t). Every key is checked before it is written, so a key
# with an error is left untouched; the other keys are still written. Returns {written, unchanged,
# stale} of the keys written, then (index in KEYS, error) for each key with an error.
#
# `_event_ms` holds the newest event time of the hash's features: an event newer than it is
# newer than every stored feature, so its values are written without reading and parsing each
# one (the usual case of a stream). Otherwise every feature is compared (`newest_wins`). A hash
# without `_event_ms` (written before it existed, or by hand) gets it from all its features.
NEWEST_WINS_LUA = """\
-- rtml online store: newest event wins, per feature, atomically (mirrors online_store.newest_wins)
local usage = 'ERR rtml online store: expected version, updated_ms, ttl_ms, then per key: ' ..
  'event_ms, n, n (feature, value) pairs'
local nargs = #ARGV
local ttl = tonumber(ARGV[3])
if nargs < 3 or not ttl then return redis.error_reply(usage) end
local a = 4
for k = 1, #KEYS do
  local n = tonumber(ARGV[a + 1])
  if not n or n < 1 or n ~= math.floor(n) or a + 1 + 2 * n > nargs then
    return redis.error_reply(usage)
  end
  a = a + 2 + 2 * n
end
if a ~= nargs + 1 then return redis.error_reply(usage) end

local call, pcall, find, match, unpack, tonumber = redis.call, redis.pcall, string.find,
  string.match, unpack, tonumber
local pattern, integer = '^{"t":(%-?%d+),"v":', '^%-?%d+$'
local version, updated, ttl_arg = ARGV[1], ARGV[2], ARGV[3]
local written, unchanged, stale = 0, 0, 0
local result = {0, 0, 0}
a = 4
for k = 1, #KEYS do
  local key, t_arg, n = KEYS[k], ARGV[a], tonumber(ARGV[a + 1])
  local first = a + 2 -- ARGV index of the key's first feature name
  a = a + 2 + 2 * n
  local err, t
  if match(t_arg, integer) then t = tonumber(t_arg) else
    err = 'ERR rtml online store: event time ' .. t_arg .. ' is not an integer'
  end
  if not err then
    local prefix, seen = '{"t":' .. t_arg .. ',"v":', {}
    for i = first, first + 2 * n - 2, 2 do
      local name = ARGV[i]
      if seen[name] then
        err = 'ERR rtml online store: feature ' .. name .. ' appears twice for ' .. key
        break
      end
      seen[name] = true
      if find(ARGV[i + 1], prefix, 1, true) ~= 1 then
        err = 'ERR rtml online store: value for ' .. name .. ' is not encoded with event time ' ..
          t_arg
        break
      end
    end
  end
  local newest
  if not err then
    newest = pcall('HGET', key, '_event_ms')
    if type(newest) == 'table' then
      err = newest.err -- WRONGTYPE
    elseif newest then
      newest = match(newest, integer) and tonumber(newest)
      if not newest then
        err = 'ERR rtml online store: ' .. key .. ' field _event_ms does not hold an event time'
      end
    elseif call('EXISTS', key) == 0 then
      newest = -math.huge -- a new hash: everything is newer
    end
  end
  local w, u, s = 0, 0, 0
  local updates = {'_version', version, '_updated_ms', updated, '_event_ms', t_arg}
  if not err and newest and t > newest then
    for i = first, first + 2 * n - 1 do updates[i - first + 7] = ARGV[i] end
    w = n
  elseif not err then
    local names = {}
    for i = 1, n do names[i] = ARGV[first + 2 * i - 2] end
    local stored = call('HMGET', key, unpack(names))
    for i = 1, n do
      local name, value, old = names[i], ARGV[first + 2 * i - 1], stored[i]
      local old_t = old and match(old, pattern)
      if old and not old_t then
        err = 'ERR rtml online store: ' .. key .. ' field ' .. name ..
          ' does not hold an rtml feature value'
        break
      end
      old_t = old_t and tonumber(old_t)
      if not old or t > old_t or (t == old_t and value ~= old) then
        updates[#updates + 1] = name
        updates[#updates + 1] = value
        w = w + 1
      elseif value == old then
        u = u + 1
      else
        s = s + 1
      end
    end
    if not err and w > 0 and not newest then -- no _event_ms yet: the newest of all features
      newest = t
      local all = call('HGETALL', key)
      for i = 1, #all, 2 do
        local other = find(all[i], '_', 1, true) ~= 1 and match(all[i + 1], pattern)
        if other and tonumber(other) > newest then newest = tonumber(other) end
      end
    end
    if newest and newest > t then updates[6] = string.format('%d', newest) end
  end
  if not err and w > 0 then
    local reply = pcall('HSET', key, unpack(updates))
    if type(reply) == 'table' then
      err = reply.err -- OOM, before the first write of the call
    elseif ttl > 0 then
      call('PEXPIRE', key, ttl_arg)
    end
  end
  if err then
    result[#result + 1] = k
    result[#result + 1] = {err = err}
  else
    written, unchanged, stale = written + w, unchanged + u, stale + s
  end
end
result[1], result[2], result[3] = written, unchanged, stale
return result
"""
NEWEST_WINS_SHA = hashlib.sha1(NEWEST_WINS_LUA.encode()).hexdigest()


# -- feature sets, rows and the write plan -------------------------------------------------------


@dataclass(frozen=True)
class FeatureSet:
    """What the writer needs to know about a feature set (from its metadata)."""

    name: str
    version: str = "1"
    ttl_ms: int | None = None  # None: the hashes never expire
    entity_column: str = "entity_id"  # in dict / DataFrame rows
    event_time_column: str = "event_ms"  # epoch ms or datetime

    def __post_init__(self) -> None:
        check_name(self.name)
        object.__setattr__(self, "version", str(self.version))
        if not self.version:
            raise ValueError("feature set version must not be empty")
        if self.ttl_ms is not None and self.ttl_ms <= 0:
            raise ValueError(f"ttl_ms must be positive or None, not {self.ttl_ms}")


@dataclass(frozen=True)
class FeatureRow:
    """Feature values of one entity at one event time; features it lacks are left as they are."""

    entity_id: str | int
    event_ms: int
    values: Mapping[str, Value]

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any], featureset: FeatureSet) -> FeatureRow:
        """A dict (or DataFrame record): the entity and event time columns, the rest features."""
        try:
            entity = row[featureset.entity_column]
            event = row[featureset.event_time_column]
        except KeyError as missing:
            raise ValueError(_missing_column(missing.args[0], featureset)) from None
        skip = (featureset.entity_column, featureset.event_time_column)
        values = {name: value for name, value in row.items() if name not in skip}
        return cls(entity, event, values)


def _missing_column(column: object, featureset: FeatureSet) -> str:
    return (
        f"row has no {column!r} column (feature set {featureset.name!r} expects "
        f"{featureset.entity_column!r} and {featureset.event_time_column!r})"
    )


@dataclass(frozen=True)
class KeyWrite:
    """The encoded newest value of each feature of one entity in a batch."""

    key: str
    fields: dict[str, str]

    def args(self) -> list[str]:
        return [part for item in self.fields.items() for part in item]


def _is_frame(rows: object) -> bool:
    return hasattr(rows, "to_dict") and hasattr(rows, "columns")


def as_rows(rows: object, featureset: FeatureSet) -> Iterable[FeatureRow]:
    """FeatureRows from FeatureRows, dicts, or a pandas DataFrame (one row per record)."""
    if _is_frame(rows):
        rows = rows.to_dict("records")  # type: ignore[attr-defined]
    if isinstance(rows, Mapping | str | bytes):
        raise TypeError("write_batch takes many rows: a DataFrame or a list of dicts/FeatureRows")
    for row in rows:  # type: ignore[attr-defined]
        yield row if isinstance(row, FeatureRow) else FeatureRow.from_mapping(row, featureset)


def plan_writes(rows: Iterable[FeatureRow], featureset: FeatureSet) -> tuple[list[KeyWrite], int]:
    """One KeyWrite per entity, keeping per feature the value `newest_wins` would keep.

    Applying the plan gives what applying the rows one by one would (ties: the later row wins).
    Returns the writes, in order of first appearance, and how many values a newer one in the same
    batch superseded. (`plan_columns` does the same for columns, faster.)
    """
    planned: dict[str, dict[str, str]] = {}
    superseded = 0
    prefix = f"{KEY_PREFIX}{featureset.name}:"  # FeatureSet checked the name
    checked: set[str] = set()
    for row in rows:
        key = prefix + entity_str(row.entity_id)
        t = event_ms(row.event_ms)
        fields = planned.setdefault(key, {})
        for name, value in row.values.items():
            if name not in checked:
                checked.add(check_name(name, "feature"))
            try:
                encoded = _encode(normalize_value(value), t)
            except TypeError as error:
                raise TypeError(f"feature {name!r} of {key}: {error}") from None
            previous = fields.get(name)
            if previous is None:
                fields[name] = encoded
            else:
                superseded += 1
                if newest_wins(previous, encoded) is Outcome.WRITE:
                    fields[name] = encoded
    writes = [KeyWrite(key, fields) for key, fields in planned.items() if fields]
    return writes, superseded


# -- script calls: keys and arguments as RESP, built once ----------------------------------------


@dataclass(frozen=True, slots=True)
class KeyGroup:
    """Values of one key with one event time: one entry of a script call (see NEWEST_WINS_LUA).

    `key_arg` and `args` (event time, count, feature/value pairs) are already RESP bulk strings:
    a call is then one join. redis-py packs each argument in Python (~1 µs each, 35 per key).
    """

    key: str
    event_ms: int
    key_arg: str
    args: str
    nargs: int


def _bulk(text: str) -> str:
    """`text` as a RESP bulk string (the length counts UTF-8 bytes)."""
    size = len(text) if text.isascii() else len(text.encode())
    return f"${size}\r\n{text}\r\n"


def _group(key: str, t: int, pairs: list[str]) -> KeyGroup:
    """A KeyGroup from RESP-encoded (feature, value) pairs, all encoded with event time `t`."""
    args = _bulk(str(t)) + _bulk(str(len(pairs) // 2)) + "".join(pairs)
    return KeyGroup(key, t, _bulk(key), args, 2 + len(pairs))


def group_writes(writes: Iterable[KeyWrite]) -> list[KeyGroup]:
    """KeyGroups of KeyWrites: one per key and event time (a KeyWrite may mix event times)."""
    groups = []
    for write in writes:
        by_time: dict[int, list[str]] = {}
        for name, value in write.fields.items():
            by_time.setdefault(stored_event_ms(value), []).extend((_bulk(name), _bulk(value)))
        groups.extend(_group(write.key, t, pairs) for t, pairs in by_time.items())
    return groups


def script_call(
    sha: str, groups: Sequence[KeyGroup], version: str, updated_ms: int, ttl_ms: int
) -> bytes:
    """`EVALSHA sha len(groups) keys... version updated_ms ttl_ms args...` in RESP."""
    head = [str(version), str(updated_ms), str(ttl_ms)]
    size = 3 + len(groups) + len(head) + sum(group.nargs for group in groups)
    return "".join(
        (
            f"*{size}\r\n$7\r\nEVALSHA\r\n",
            _bulk(sha),
            _bulk(str(len(groups))),
            *(group.key_arg for group in groups),
            *map(_bulk, head),
            *(group.args for group in groups),
        )
    ).encode()


def _column(values: object, rows: int | None, what: str) -> pd.Series:
    column = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    if rows is not None and len(column) != rows:
        raise ValueError(f"column {what!r} has {len(column)} rows, not {rows}")
    return column


def _entity_texts(column: pd.Series) -> list[str]:
    if column.dtype.kind in "iu":
        return list(map(str, column.to_numpy().tolist()))
    texts = column.tolist()
    for i, entity in enumerate(texts):
        if type(entity) is not str or not entity:
            texts[i] = entity_str(entity)  # an int, or a clear error
    return texts


def _event_times(column: pd.Series) -> list[int]:
    if column.dtype.kind in "iu":
        times = column.to_numpy().tolist()
        if times and (min(times) < -MAX_EVENT_MS or max(times) > MAX_EVENT_MS):
            event_ms(max(times, key=abs))  # raises: out of range
        return times
    return [event_ms(value) for value in column.tolist()]  # datetimes, or a clear error


_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _json_texts(column: pd.Series, rows: np.ndarray, name: str, keys: list[str]) -> list[str]:
    """The JSON text of each value at `rows` (what `_encode` writes after `"v":`)."""
    kind = column.dtype.kind if isinstance(column.dtype, np.dtype) else "O"
    if kind == "b":
        return ["true" if value else "false" for value in column.to_numpy()[rows].tolist()]
    if kind in "iu":
        return list(map(int.__repr__, column.to_numpy()[rows].tolist()))
    if kind == "f":
        picked = column.to_numpy()[rows]
        texts = list(map(float.__repr__, picked.tolist()))
        if not np.isfinite(picked).all():
            texts = [_NON_FINITE.get(text, text) for text in texts]
        return texts
    values = column.tolist()
    texts = []
    for key, i in zip(keys, rows.tolist(), strict=True):
        value = values[i]
        if type(value) is str:
            texts.append(_json_str(value))
        elif value is None:
            texts.append("null")
        else:
            try:
                texts.append(json.dumps(normalize_value(value), ensure_ascii=False,
                                        separators=(",", ":")))  # fmt: skip
            except TypeError as error:
                raise TypeError(f"feature {name!r} of {key}: {error}") from None
    return texts


def plan_columns(
    entities: object, event_times: object, features: Mapping[str, object], featureset: FeatureSet
) -> tuple[list[KeyGroup], int, int]:
    """`plan_writes` for columns (pandas Series or sequences of equal length), vectorized.

    Every row holds every feature at one event time, so per entity the newest row wins as a
    whole: the last row with the greatest event time (what applying the rows in order leaves).
    Returns one KeyGroup per entity, the number of rows and of superseded values.
    """
    names = [check_name(name, "feature") for name in features]
    entity_column = _column(entities, None, featureset.entity_column)
    rows = len(entity_column)
    time_column = _column(event_times, rows, featureset.event_time_column)
    columns = [_column(values, rows, name) for name, values in features.items()]
    prefix = f"{KEY_PREFIX}{featureset.name}:"
    keys = [prefix + entity for entity in _entity_texts(entity_column)]
    times = _event_times(time_column)
    if not names or not rows:
        return [], rows, 0
    newest: dict[str, int] = {}  # key -> row
    for row, key in enumerate(keys):
        other = newest.get(key)
        if other is None or times[row] >= times[other]:
            newest[key] = row
    chosen = np.fromiter(newest.values(), dtype=np.int64, count=len(newest))
    chosen_keys = list(newest)
    chosen_times = [times[row] for row in chosen.tolist()]
    value_prefixes = [f'{{"t":{t},"v":' for t in chosen_times]
    pairs = []
    for name, column in zip(names, columns, strict=True):
        texts = _json_texts(column, chosen, name, chosen_keys)
        name_arg = _bulk(name)
        pairs.append([
            f"{name_arg}${len(start) + (len(text) if text.isascii() else len(text.encode())) + 1}"
            f"\r\n{start}{text}}}\r\n"
            for start, text in zip(value_prefixes, texts, strict=True)
        ])  # fmt: skip
    count_arg = _bulk(str(len(names)))
    nargs = 2 + 2 * len(names)
    groups = [
        KeyGroup(key, t, _bulk(key), _bulk(str(t)) + count_arg + "".join(parts), nargs)
        for key, t, parts in zip(chosen_keys, chosen_times, zip(*pairs, strict=True), strict=True)
    ]
    return groups, rows, (rows - len(groups)) * len(names)


def split_batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """`items` in consecutive slices of at most `size` (the last may be shorter)."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, not {size}")
    return [items[start : start + size] for start in range(0, len(items), size)]


# -- retries -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriterSettings:
    """How `RedisFeatureWriter` batches, bounds and retries its writes."""

    # Keys per script call. A call is atomic, so it holds up other clients for its duration
    # (~10-30 µs per key); on Redis Cluster use 1 (the keys of one call must share a slot).
    batch_size: int = 200
    max_in_flight: int = 4  # script calls sent concurrently (and connections used)
    timeout_s: float = 5.0  # per call, and to connect
    backoff_base_s: float = 0.05  # first retry after 25-50 ms
    backoff_max_s: float = 2.0  # retries at most every 1-2 s while Redis is down
    retry_deadline_s: float | None = None  # give up after failing this long; None: never

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_in_flight < 1:
            raise ValueError("batch_size and max_in_flight must be at least 1")
        if self.timeout_s <= 0 or self.backoff_base_s <= 0 or self.backoff_max_s <= 0:
            raise ValueError("timeout_s, backoff_base_s and backoff_max_s must be positive")
        if self.retry_deadline_s is not None and self.retry_deadline_s <= 0:
            raise ValueError("retry_deadline_s must be positive, or None to retry forever")


def backoff_delay(attempt: int, settings: WriterSettings, rand: float) -> float:
    """Seconds to wait before retry `attempt` (1, 2, ...): exponential, capped, 'equal jitter'.

    The ceiling doubles from `backoff_base_s` up to `backoff_max_s`; the delay is drawn from its
    upper half (`rand` in [0, 1)), so writers that failed together do not retry together.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, not {attempt}")
    ceiling = min(settings.backoff_max_s, settings.backoff_base_s * 2.0 ** min(attempt - 1, 60))
    return ceiling / 2 * (1 + rand)


class ErrorKind(enum.Enum):
    RETRY = "retry"
    RELOAD_SCRIPT = "reload-script"
    FATAL = "fatal"


# Server states that pass (a restart, a failover, a long script, memory or disk pressure).
_TRANSIENT_PREFIXES = ("LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN", "READONLY",
                       "OOM", "MISCONF")  # fmt: skip


def classify(error: BaseException) -> ErrorKind:
    """Whether an error from Redis is retried, needs the script loaded again, or is fatal."""
    if isinstance(error, redis.exceptions.NoScriptError):
        return ErrorKind.RELOAD_SCRIPT
    if isinstance(
        error, redis.exceptions.AuthenticationError | redis.exceptions.AuthorizationError
    ):
        return ErrorKind.FATAL
    if isinstance(
        error, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError | TimeoutError
    ):
        return ErrorKind.RETRY  # BusyLoadingError (LOADING) is a ConnectionError too
    # redis-py strips the OOM and READONLY codes off these messages: known by their class
    if isinstance(error, redis.exceptions.OutOfMemoryError | redis.exceptions.ReadOnlyError):
        return ErrorKind.RETRY
    if isinstance(error, redis.exceptions.ResponseError):
        return ErrorKind.RETRY if str(error).startswith(_TRANSIENT_PREFIXES) else ErrorKind.FATAL
    if isinstance(error, OSError):
        return ErrorKind.RETRY
    return ErrorKind.FATAL


# -- the writer --------------------------------------------------------------------------------


@dataclass
class WriteStats:
    """What one `write_batch` did. Every row was acknowledged by Redis when this is returned."""

    rows: int = 0
    keys: int = 0  # entities (hashes) written to
    written: int = 0  # feature values that changed
    unchanged: int = 0  # identical to the stored value (a replay)
    stale: int = 0  # older than the stored value: ignored
    superseded: int = 0  # replaced by a newer value of the same batch before sending
    calls: int = 0  # script calls sent, retries included
    retries: int = 0  # calls sent again (connection errors, timeouts, script reloads)
    seconds: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class RedisFeatureWriter:
    """Writes feature rows of one feature set to Redis; `write_batch` blocks until all are acked.

    Safe to call from synchronous code and from several threads. The event loop thread and the
    connections are created at the first write (after a fork, again) and closed by `close()`.
    The writer pickles as its configuration only, so it can be built before a Flink UDF ships.
    """

    def __init__(
        self, url: str, featureset: FeatureSet, settings: WriterSettings | None = None
    ) -> None:
        self.url = url
        self.featureset = featureset
        self.settings = settings or WriterSettings()
        self._lock = threading.Lock()
        self._closed = False
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: redis.asyncio.Redis | None = None
        self._in_flight: asyncio.Semaphore | None = None
        self._pid = os.getpid()
        self._random = random.Random()

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "featureset": self.featureset, "settings": self.settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["featureset"], state["settings"])  # type: ignore[misc]

    def __enter__(self) -> RedisFeatureWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- public ----------------------------------------------------------------------------------

    def write_batch(self, rows: object) -> WriteStats:
        """Write rows (a DataFrame, dicts or FeatureRows); return once Redis acknowledged all.

        Blocks through Redis outages (retrying with backoff) unless `retry_deadline_s` is set;
        raises `OnlineStoreError` on errors retrying cannot fix, ValueError/TypeError on bad rows
        (before anything is sent).
        """
        started = time.perf_counter()
        fs = self.featureset
        if _is_frame(rows):
            frame: pd.DataFrame = rows  # type: ignore[assignment]
            if frame.columns.has_duplicates:
                duplicated = sorted(map(str, frame.columns[frame.columns.duplicated()]))
                raise ValueError(f"duplicate columns: {duplicated}")
            for column in (fs.entity_column, fs.event_time_column):
                if column not in frame.columns:
                    raise ValueError(_missing_column(column, fs))
            skip = (fs.entity_column, fs.event_time_column)
            features = {name: frame[name] for name in frame.columns if name not in skip}
            return self.write_columns(frame[fs.entity_column], frame[fs.event_time_column],
                                      features, _started=started)  # fmt: skip
        row_list = list(as_rows(rows, fs))
        writes, superseded = plan_writes(row_list, fs)
        return self._write(group_writes(writes), len(row_list), superseded, started)

    def write_columns(
        self,
        entities: object,
        event_times: object,
        features: Mapping[str, object],
        *,
        _started: float | None = None,
    ) -> WriteStats:
        """`write_batch` for columns (pandas Series, arrays or lists): what a pandas UDF has.

        Row i is (entities[i], event_times[i], {name: column[i] for each feature column}).
        """
        started = time.perf_counter() if _started is None else _started
        groups, rows, superseded = plan_columns(entities, event_times, features, self.featureset)
        return self._write(groups, rows, superseded, started)

    def close(self) -> None:
        """Close the connections and stop the event loop thread (idempotent)."""
        with self._lock:
            self._closed = True
            loop, thread, client = self._loop, self._thread, self._client
            if loop is None or self._pid != os.getpid():
                self._reset_runtime()
                return
            error = stop_loop_thread(
                loop, thread, None if client is None else client.aclose, self.settings.timeout_s
            )
            if error is not None:  # closing a dead connection may fail; we are done with it
                log.debug("closing the Redis client failed: %r", error)
            self._reset_runtime()

    # -- internals -------------------------------------------------------------------------------

    def _write(
        self, groups: list[KeyGroup], rows: int, superseded: int, started: float
    ) -> WriteStats:
        stats = WriteStats(rows=rows, keys=len({group.key for group in groups}),
                           superseded=superseded)  # fmt: skip
        if groups:
            loop = self._ensure_loop()
            future = asyncio.run_coroutine_threadsafe(self._write_all(groups, stats), loop)
            try:
                future.result()
            except BaseException:
                future.cancel()  # e.g. KeyboardInterrupt: stop retrying in the background
                raise
        stats.seconds = time.perf_counter() - started
        return stats

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RuntimeError("this RedisFeatureWriter is closed")
            if self._pid != os.getpid():  # forked: the loop thread did not come along
                self._reset_runtime()
            if self._loop is None:
                self._loop, self._thread = start_loop_thread(
                    f"rtml-redis-writer-{self.featureset.name}"
                )
            return self._loop

    def _connect(self) -> redis.asyncio.Redis:
        if self._client is None:
            s = self.settings
            self._client = redis.asyncio.Redis.from_url(
                self.url, socket_timeout=s.timeout_s, socket_connect_timeout=s.timeout_s,
                max_connections=s.max_in_flight + 1,  # + 1: loading the script
            )  # fmt: skip
            self._in_flight = asyncio.Semaphore(s.max_in_flight)
        return self._client

    async def _write_all(self, groups: list[KeyGroup], stats: WriteStats) -> None:
        if self._client is None:
            client = self._connect()
            try:  # saves every concurrent call its own NOSCRIPT on a cold script cache
                await asyncio.wait_for(client.script_load(NEWEST_WINS_LUA), self.settings.timeout_s)
            except Exception:  # noqa: BLE001 - Redis unreachable: the retry loop deals with it
                log.debug("preloading the script failed", exc_info=True)
        tasks = [
            asyncio.ensure_future(self._write_sub_batch(batch, stats))
            for batch in split_batches(groups, self.settings.batch_size)
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:  # one failed (or we were cancelled): stop the others
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _write_sub_batch(self, batch: Sequence[KeyGroup], stats: WriteStats) -> None:
        assert self._in_flight is not None
        async with self._in_flight:
            pending = list(batch)
            attempt = 0  # consecutive failed attempts without progress
            failing_since = 0.0  # when this streak of failures began
            while pending:
                if attempt == 0:
                    failing_since = time.monotonic()
                stats.calls += 1
                try:
                    reply = await asyncio.wait_for(self._call(pending), self.settings.timeout_s)
                except Exception as error:  # noqa: BLE001 - classified just below
                    kind = classify(error)
                    if kind is ErrorKind.FATAL:
                        raise OnlineStoreError(
                            f"writing {len(pending)} keys to Redis failed: {error!r}"
                        ) from error
                    attempt += 1
                    stats.retries += 1
                    await self._recover(kind, attempt, error, failing_since)
                    continue
                written, unchanged, stale, *failures = reply
                stats.written += written
                stats.unchanged += unchanged
                stats.stale += stale
                still: list[KeyGroup] = []
                retry_error: BaseException | None = None
                for index, error in zip(failures[::2], failures[1::2], strict=True):
                    group = pending[index - 1]
                    if not isinstance(error, BaseException) or classify(error) is ErrorKind.FATAL:
                        raise OnlineStoreError(
                            f"Redis refused the write of {group.key}: {error}"
                        ) from (error if isinstance(error, BaseException) else None)
                    still.append(group)
                    retry_error = error
                if still:
                    if len(still) < len(pending):  # progress: a new streak
                        attempt, failing_since = 0, time.monotonic()
                    attempt += 1
                    stats.retries += 1
                    assert retry_error is not None
                    await self._recover(ErrorKind.RETRY, attempt, retry_error, failing_since)
                elif attempt:
                    log.info("Redis writes succeed again after %d failed attempt(s)", attempt)
                pending = still

    async def _call(self, groups: Sequence[KeyGroup]) -> list[Any]:
        """One script call for `groups`, sent as prepacked RESP on a pooled connection."""
        fs = self.featureset
        payload = script_call(NEWEST_WINS_SHA, groups, fs.version, wall_clock_ms(), fs.ttl_ms or 0)
        pool = self._connect().connection_pool
        connection = await pool.get_connection()
        try:
            # On a timeout or a lost connection redis-py disconnects it: no stale reply is read
            await connection.send_packed_command(payload)
            return await connection.read_response()
        finally:
            await pool.release(connection)

    async def _recover(
        self, kind: ErrorKind, attempt: int, error: BaseException, failing_since: float
    ) -> None:
        """Before the next attempt: load the script, or wait (backoff).

        Gives up (OnlineStoreUnavailable) only with a `retry_deadline_s`, once the failures that
        began at `failing_since` (monotonic) would outlast it.
        """
        if kind is ErrorKind.RELOAD_SCRIPT:
            try:
                sha = await asyncio.wait_for(
                    self._connect().script_load(NEWEST_WINS_LUA), self.settings.timeout_s
                )
            except Exception as load_error:  # noqa: BLE001 - classified just below
                if classify(load_error) is ErrorKind.FATAL:
                    raise OnlineStoreError(f"loading the script failed: {load_error}") from None
                error = load_error
            else:
                if sha != NEWEST_WINS_SHA:
                    raise OnlineStoreError(
                        f"Redis hashed the script to {sha}, not {NEWEST_WINS_SHA}"
                    )
                if attempt == 1:
                    return  # the usual case (first write, or after a restart): retry at once
        delay = backoff_delay(attempt, self.settings, self._random.random())
        limit = self.settings.retry_deadline_s
        if limit is not None and time.monotonic() + delay > failing_since + limit:
            raise OnlineStoreUnavailable(
                f"Redis writes still failing after {self.settings.retry_deadline_s} s "
                f"({attempt} attempts): {error!r}"
            ) from error
        level = logging.WARNING if attempt == 1 or attempt % 10 == 0 else logging.DEBUG
        log.log(level, "Redis write failed (attempt %d), retrying in %.2f s: %r",
                attempt, delay, error)  # fmt: skip
        await asyncio.sleep(delay)


# -- reading (the serving API) -----------------------------------------------------------------


@dataclass(frozen=True)
class FeatureValue:
    value: Value
    event_ms: int
    age_ms: int  # read time minus event time


@dataclass(frozen=True)
class OnlineFeatures:
    """An entity's online features as read at `read_ms`."""

    featureset: str
    entity_id: str
    version: str | None
    updated_ms: int | None  # when the newest change was written (writer's clock)
    ttl_ms: int | None  # remaining time to live; None: no expiry
    read_ms: int
    features: dict[str, FeatureValue] = field(default_factory=dict)

    @property
    def values(self) -> dict[str, Value]:
        return {name: feature.value for name, feature in self.features.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "featureset": self.featureset,
            "entity_id": self.entity_id,
            "key": feature_key(self.featureset, self.entity_id),
            "version": self.version,
            "updated_ms": self.updated_ms,
            "ttl_ms": self.ttl_ms,
            "read_ms": self.read_ms,
            "features": {
                name: {"value": f.value, "event_ms": f.event_ms, "age_ms": f.age_ms}
                for name, f in sorted(self.features.items())
            },
        }


def _text(raw: str | bytes) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def parse_features(
    featureset: str,
    entity_id: str | int,
    fields: Mapping[str | bytes, str | bytes],
    pttl: int,
    read_ms: int,
) -> OnlineFeatures | None:
    """OnlineFeatures from a hash's HGETALL and PTTL; None when the hash does not exist."""
    if not fields:
        return None
    features: dict[str, FeatureValue] = {}
    meta: dict[str, str] = {}
    key = feature_key(featureset, entity_id)
    for raw_name, raw_value in fields.items():
        name, value = _text(raw_name), _text(raw_value)
        if name.startswith("_"):
            meta[name] = value
            continue
        try:
            decoded, event_time = decode(value)
        except ValueError as error:
            raise ValueError(f"{key} field {name}: {error}") from None
        features[name] = FeatureValue(decoded, event_time, read_ms - event_time)
    updated = meta.get(UPDATED_FIELD)
    return OnlineFeatures(
        featureset=featureset,
        entity_id=entity_str(entity_id),
        version=meta.get(VERSION_FIELD),
        updated_ms=int(updated) if updated is not None else None,
        ttl_ms=pttl if pttl >= 0 else None,
        read_ms=read_ms,
        features=dict(sorted(features.items())),
    )


def get_features(
    client: redis.Redis, featureset: str, entity_id: str | int, now_ms: int | None = None
) -> OnlineFeatures | None:
    """The online features of one entity (None if never written or expired): one round trip."""
    key = feature_key(featureset, entity_id)
    read_ms = now_ms if now_ms is not None else wall_clock_ms()
    with client.pipeline(transaction=True) as pipe:
        pipe.hgetall(key)
        pipe.pttl(key)
        fields, pttl = pipe.execute()
    return parse_features(featureset, entity_id, fields, pttl, read_ms)


async def get_features_async(
    client: redis.asyncio.Redis, featureset: str, entity_id: str | int, now_ms: int | None = None
) -> OnlineFeatures | None:
    """`get_features` for asyncio applications (a `redis.asyncio.Redis` client)."""
    key = feature_key(featureset, entity_id)
    read_ms = now_ms if now_ms is not None else wall_clock_ms()
    async with client.pipeline(transaction=True) as pipe:
        pipe.hgetall(key)
        pipe.pttl(key)
        fields, pttl = await pipe.execute()
    return parse_features(featureset, entity_id, fields, pttl, read_ms)


# -- `rtml features get` -------------------------------------------------------------------------


def format_duration(ms: int) -> str:
    """A short human duration: '850 ms', '12.3 s', '4.5 min', '2.0 h', '3.1 d' (may be negative)."""
    sign, ms = ("-", -ms) if ms < 0 else ("", ms)
    if ms < 1000:
        return f"{sign}{ms} ms"
    for unit, size, limit in (("s", 1e3, 120), ("min", 6e4, 120), ("h", 3.6e6, 48)):
        if ms / size < limit:
            return f"{sign}{ms / size:.1f} {unit}"
    return f"{sign}{ms / 8.64e7:.1f} d"


def _type_name(value: Value) -> str:
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return "float"
    return type(value).__name__


def _utc(ms: int) -> str:
    try:
        return (_EPOCH + ms * _ONE_MS).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    except OverflowError:
        return str(ms)


def render_features(online: OnlineFeatures, *, as_json: bool = False) -> str:
    """What `rtml features get` prints: a table, or one JSON object."""
    if as_json:
        return json.dumps(online.to_json(), ensure_ascii=False)
    written = (
        f"written {format_duration(online.read_ms - online.updated_ms)} ago"
        if online.updated_ms is not None
        else "written -"
    )
    expires = "no expiry"
    if online.ttl_ms is not None:
        expires = f"expires in {format_duration(online.ttl_ms)}"
    lines = [
        f"{feature_key(online.featureset, online.entity_id)}  version {online.version or '-'}  "
        f"{written}  {expires}",
        f"{'FEATURE':<24} {'VALUE':<24} {'TYPE':<6} {'EVENT TIME (UTC)':<23}  AGE",
    ]
    for name, feature in online.features.items():
        shown = json.dumps(feature.value, ensure_ascii=False)
        lines.append(
            f"{name:<24} {shown:<24} {_type_name(feature.value):<6} {_utc(feature.event_ms):<23}  "
            f"{format_duration(feature.age_ms)}"
        )
    return "\n".join(lines)


def features_get_command(
    featureset: str,
    entity_id: str,
    *,
    redis_url: str,
    as_json: bool = False,
    out: TextIO | None = None,
) -> int:
    """`rtml features get`: print an entity's features; exit code 3 if it has none."""
    out = out or sys.stdout
    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        online = get_features(client, featureset, entity_id)
    except redis.exceptions.RedisError as error:
        raise RuntimeError(
            f"reading {feature_key(featureset, entity_id)} from {redis_url}: {error}"
        ) from None
    finally:
        client.close()
    if online is None:
        if as_json:
            print("null", file=out)
        print(
            f"no online features for {feature_key(featureset, entity_id)} "
            "(never written, or expired)",
            file=sys.stderr,
        )
        return 3
    print(render_features(online, as_json=as_json), file=out)
    return 0
