"""Unit tests of the clickstream generator: determinism, order, sessions, funnel, affinity, bots."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any

import pytest

from rtml.generators import GENERATORS, as_records, clickstream

START_MS = 1_763_700_000_000
GAP_MS = 5 * 60_000  # a short session gap, so users have several sessions in a short stream
FIELDS = {
    "event_id": str,
    "ts": int,
    "user_id": str,
    "session_hint": int,
    "item_id": str,
    "category": str,
    "action": str,
    "is_bot": bool,
}

Event = dict[str, Any]  # JSON values: Any keeps the assertions free of casts


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return clickstream.generate(
        40_000, seed=11, start_ms=START_MS, rate=4.0, session_gap_ms=GAP_MS, bot_fraction=0.02
    )


def sessions_of(events: list[Event]) -> dict[tuple[object, object], list[Event]]:
    """Events per (user, session_hint), in generation order."""
    sessions: dict[tuple[object, object], list[Event]] = defaultdict(list)
    for event in events:
        sessions[(event["user_id"], event["session_hint"])].append(event)
    return dict(sessions)


def ts(event: Event) -> int:
    return int(event["ts"])


def test_deterministic_per_seed() -> None:
    a = clickstream.generate(3000, seed=5, start_ms=START_MS)
    b = clickstream.generate(3000, seed=5, start_ms=START_MS)
    c = clickstream.generate(3000, seed=6, start_ms=START_MS)
    assert a == b
    assert a == list(clickstream.iter_events(3000, seed=5, start_ms=START_MS))
    assert [e["user_id"] for e in a] != [e["user_id"] for e in c]
    assert [e["item_id"] for e in a] != [e["item_id"] for e in c]


def test_schema_and_ids(events: list[Event]) -> None:
    assert len(events) == 40_000
    for event in events:
        assert set(event) == set(FIELDS)
        for name, kind in FIELDS.items():
            assert isinstance(event[name], kind), (name, event)
        assert event["action"] in clickstream.ACTIONS
        assert event["category"] in clickstream.CATEGORIES
    assert [e["event_id"] for e in events] == [f"ck-11-{n}" for n in range(len(events))]
    categories: dict[object, set[object]] = defaultdict(set)
    for event in events:
        categories[event["item_id"]].add(event["category"])
    assert all(len(found) == 1 for found in categories.values())  # an item has one category


def test_ts_non_decreasing_at_about_the_rate(events: list[Event]) -> None:
    times = [ts(e) for e in events]
    assert times == sorted(times)
    assert times[0] >= START_MS
    rate = len(events) / ((times[-1] - START_MS) / 1000)
    assert 3.0 < rate < 5.0  # asked for 4/s; sessions arrive at random


def test_jitter_only_moves_ts_and_disorder_is_bounded() -> None:
    plain = clickstream.generate(10_000, seed=3, start_ms=START_MS, rate=50.0)
    jittered = clickstream.generate(10_000, seed=3, start_ms=START_MS, rate=50.0, jitter_ms=1500)
    assert [{**e, "ts": 0} for e in plain] == [{**e, "ts": 0} for e in jittered]
    newest = START_MS
    out_of_order = 0
    for before, after in zip(plain, jittered, strict=True):
        assert START_MS <= ts(after) <= ts(before)
        assert ts(after) >= newest - 1500
        out_of_order += ts(after) < newest
        newest = max(newest, ts(after))
    assert out_of_order > 100


def test_session_gaps_separate_sessions(events: list[Event]) -> None:
    per_user: dict[object, list[Event]] = defaultdict(list)
    for event in events:
        per_user[event["user_id"]].append(event)
    within = between = 0
    for user_events in per_user.values():
        assert user_events[0]["session_hint"] == 0
        for previous, event in zip(user_events, user_events[1:], strict=False):
            gap = ts(event) - ts(previous)
            if event["session_hint"] == previous["session_hint"]:
                assert gap < GAP_MS
                within += 1
            else:
                assert event["session_hint"] == int(previous["session_hint"]) + 1
                assert gap >= GAP_MS
                between += 1
    assert within > 10_000 and between > 1000
    sessions_per_user = Counter(u for u, _ in sessions_of(events))
    assert max(sessions_per_user.values()) >= 4
    assert min(sessions_per_user.values()) == 1


def test_gap_sessionizing_reproduces_the_hints(events: list[Event]) -> None:
    """What a session-window job computes from the gaps alone equals the ground truth."""
    found: dict[object, int] = {}
    last: dict[object, int] = {}
    for event in events:
        user = event["user_id"]
        if user not in found:
            found[user] = 0
        elif ts(event) - last[user] >= GAP_MS:
            found[user] += 1
        last[user] = ts(event)
        assert found[user] == event["session_hint"]


def test_funnel_views_carts_purchases(events: list[Event]) -> None:
    actions = Counter(e["action"] for e in events)
    assert actions["view"] > 5 * actions["cart"] > 0
    assert actions["cart"] > 1.5 * actions["purchase"] > 0
    for session in sessions_of(events).values():
        viewed: set[object] = set()
        carted: set[object] = set()
        for event in session:
            if event["action"] == "view":
                viewed.add(event["item_id"])
            elif event["action"] == "cart":
                assert event["item_id"] in viewed
                carted.add(event["item_id"])
            else:
                assert event["item_id"] in carted


def test_users_have_category_affinity(events: list[Event]) -> None:
    views: dict[object, Counter[object]] = defaultdict(Counter)
    for event in events:
        if event["action"] == "view" and not event["is_bot"]:
            views[event["user_id"]][event["category"]] += 1
    shares = [
        counts.most_common(1)[0][1] / sum(counts.values())
        for counts in views.values()
        if sum(counts.values()) >= 20
    ]
    assert len(shares) >= 20
    assert statistics.median(shares) > 0.3  # 12 categories: 0.08 each without affinity


def test_user_activity_is_skewed(events: list[Event]) -> None:
    per_user = sorted(
        Counter(e["user_id"] for e in events if not e["is_bot"]).values(), reverse=True
    )
    top = per_user[: max(1, len(per_user) // 100)]
    assert statistics.mean(top) >= 4 * statistics.median(per_user)
    per_user_sessions = sorted(
        Counter(user for user, _ in sessions_of(events)).values(), reverse=True
    )
    top = per_user_sessions[: max(1, len(per_user_sessions) // 100)]
    assert statistics.mean(top) >= 3 * statistics.median(per_user_sessions)


def test_bots_are_flagged_fast_and_never_buy(events: list[Event]) -> None:
    sessions = sessions_of(events)
    bots = {key: s for key, s in sessions.items() if s[0]["is_bot"]}
    humans = {key: s for key, s in sessions.items() if not s[0]["is_bot"]}
    assert len(bots) >= 10
    assert 0.01 < len(bots) / len(sessions) < 0.03
    for session in sessions.values():
        assert len({e["is_bot"] for e in session}) == 1  # a whole session is a bot or not
    complete = [s for s in bots.values() if ts(s[-1]) < ts(events[-1]) - 5 * 60_000]
    assert complete
    for session in complete:
        assert len(session) >= 30
    for session in bots.values():
        assert {e["action"] for e in session} == {"view"}
        gaps = [ts(b) - ts(a) for a, b in zip(session, session[1:], strict=False)]
        assert not gaps or max(gaps) < 1000
    bot_users = {user for user, _ in bots}
    human_users = {user for user, _ in humans}
    assert not bot_users & human_users
    assert all(hint == 0 for _, hint in bots)  # a fresh user id per bot session
    human_gaps = [
        ts(b) - ts(a)
        for session in humans.values()
        for a, b in zip(session, session[1:], strict=False)
    ]
    assert statistics.median(human_gaps) > 5000


def test_bot_fraction_zero_and_small_counts() -> None:
    assert clickstream.generate(0, seed=1, start_ms=START_MS) == []
    no_bots = clickstream.generate(5000, seed=1, start_ms=START_MS, bot_fraction=0.0)
    assert len(no_bots) == 5000 and not any(e["is_bot"] for e in no_bots)
    assert len(clickstream.generate(7, seed=1, start_ms=START_MS)) == 7


@pytest.mark.parametrize(
    "kwargs",
    [
        {"count": -1},
        {"rate": -2.0},
        {"session_gap_ms": 500},
        {"bot_fraction": -0.1},
        {"jitter_ms": -5},
        {"users": 0},
        {"items": 3},
    ],
)
def test_invalid_arguments_raise(kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = {"count": 10, "seed": 0, "start_ms": START_MS, **kwargs}
    with pytest.raises(ValueError):
        clickstream.generate(**arguments)


def test_registry_entry_and_records() -> None:
    entry = GENERATORS["clickstream"]
    assert entry.topic_default == "rtml.clickstream.events"
    assert entry.labels is None and entry.key_of is clickstream.key_of
    events = entry.generate(5, seed=1, start_ms=START_MS)
    records = list(as_records(events, entry.key_of))
    assert [r.key for r in records] == [str(e["user_id"]).encode() for e in events]
