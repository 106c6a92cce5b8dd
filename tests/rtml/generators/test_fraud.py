"""Unit tests of the card-transaction generator: determinism, order, skew, attack shapes, labels."""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from typing import Any

import pytest

from rtml.generators import GENERATORS, as_records, fraud

START_MS = 1_763_700_000_000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
FIELDS = {
    "event_id": str,
    "ts": int,
    "card_id": str,
    "merchant_id": str,
    "merchant_category": str,
    "amount": float,
    "currency": str,
    "country": str,
    "device_id": str,
    "ip": str,
    "is_fraud": bool,
    "fraud_type": (str, type(None)),
    "attack_id": (str, type(None)),
}

Event = dict[str, Any]  # JSON values: Any keeps the assertions free of casts


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return fraud.generate(60_000, seed=11, start_ms=START_MS, rate=20.0)


def attacks_of(events: list[Event], kind: str) -> dict[str, list[Event]]:
    groups: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event["fraud_type"] == kind:
            groups[str(event["attack_id"])].append(event)
    return dict(groups)


def test_deterministic_per_seed() -> None:
    a = fraud.generate(3000, seed=5, start_ms=START_MS)
    b = fraud.generate(3000, seed=5, start_ms=START_MS)
    c = fraud.generate(3000, seed=6, start_ms=START_MS)
    assert a == b
    assert a == list(fraud.iter_events(3000, seed=5, start_ms=START_MS))
    assert [e["card_id"] for e in a] != [e["card_id"] for e in c]
    assert [e["amount"] for e in a] != [e["amount"] for e in c]


def test_schema_ids_and_amounts(events: list[Event]) -> None:
    assert len(events) == 60_000
    for event in events[:2000] + [e for e in events if e["is_fraud"]]:
        assert set(event) == set(FIELDS)
        for name, kind in FIELDS.items():
            assert isinstance(event[name], kind), (name, event)
        assert event["is_fraud"] == (event["fraud_type"] is not None)
        assert event["is_fraud"] == (event["attack_id"] is not None)
        assert event["fraud_type"] in (None, *fraud.FRAUD_TYPES)
        assert event["country"] in fraud.COUNTRIES
        assert event["amount"] == round(event["amount"], 2) > 0
        assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", str(event["ip"]))
    assert [e["event_id"] for e in events] == [f"tx-11-{n}" for n in range(len(events))]
    currencies: dict[object, set[object]] = defaultdict(set)
    for event in events:
        currencies[event["card_id"]].add(event["currency"])
    assert all(len(found) == 1 for found in currencies.values())  # the card's billing currency


def test_ts_non_decreasing_and_spans_count_over_rate(events: list[Event]) -> None:
    ts = [int(e["ts"]) for e in events]
    assert ts == sorted(ts)
    assert ts[0] >= START_MS
    span_s = (ts[-1] - START_MS) / 1000
    assert 0.95 * 3000 < span_s <= 3000  # 60k events at 20/s


def test_jitter_only_moves_ts_and_disorder_is_bounded() -> None:
    plain = fraud.generate(20_000, seed=3, start_ms=START_MS, rate=200.0)
    jittered = fraud.generate(20_000, seed=3, start_ms=START_MS, rate=200.0, jitter_ms=2000)
    assert [{**e, "ts": 0} for e in plain] == [{**e, "ts": 0} for e in jittered]
    newest = START_MS
    out_of_order = 0
    for before, after in zip(plain, jittered, strict=True):
        ts = int(after["ts"])
        assert START_MS <= ts <= int(before["ts"])
        assert ts >= newest - 2000
        out_of_order += ts < newest
        newest = max(newest, ts)
    assert out_of_order > 1000


def test_fraud_fraction_is_the_requested_one(events: list[Event]) -> None:
    assert sum(bool(e["is_fraud"]) for e in events) == round(60_000 * 0.015)
    other = fraud.generate(20_000, seed=2, start_ms=START_MS, fraud_fraction=0.05)
    assert sum(bool(e["is_fraud"]) for e in other) == 1000
    assert not any(
        e["is_fraud"] for e in fraud.generate(5000, seed=2, start_ms=0, fraud_fraction=0)
    )


def test_every_attack_type_appears(events: list[Event]) -> None:
    kinds = Counter(e["fraud_type"] for e in events if e["is_fraud"])
    assert set(kinds) == set(fraud.FRAUD_TYPES)
    for kind in fraud.FRAUD_TYPES:
        assert len(attacks_of(events, kind)) >= 5


def test_card_testing_bursts(events: list[Event]) -> None:
    for attack in attacks_of(events, "card_testing").values():
        k = len(attack)
        assert k >= 8
        assert len({e["card_id"] for e in attack}) == 1
        assert len({e["merchant_id"] for e in attack}) == k  # k different merchants
        assert all(0.5 <= e["amount"] <= 5.0 for e in attack)
        assert int(attack[-1]["ts"]) - int(attack[0]["ts"]) <= 10 * MINUTE_MS
        assert all(e["is_fraud"] for e in attack)


def test_account_takeover_new_device_and_country_then_larger_purchases(
    events: list[Event],
) -> None:
    takeovers = attacks_of(events, "account_takeover")
    first_of = {attack[0]["event_id"]: attack for attack in takeovers.values()}
    devices: dict[object, set[object]] = defaultdict(set)
    countries: dict[object, set[object]] = defaultdict(set)
    ips: dict[object, set[object]] = defaultdict(set)
    legit: dict[object, list[float]] = defaultdict(list)
    checked_amounts = 0
    for event in events:
        card = event["card_id"]
        attack = first_of.get(event["event_id"])
        if attack is not None:
            assert len(attack) >= 2
            assert event["device_id"] not in devices[card]
            assert event["country"] not in countries[card]
            assert event["ip"] not in ips[card]
            assert {(e["device_id"], e["country"], e["card_id"]) for e in attack} == {
                (event["device_id"], event["country"], card)
            }
            if legit[card]:
                median = statistics.median(legit[card])
                assert all(e["amount"] >= median for e in attack)
                checked_amounts += 1
        devices[card].add(event["device_id"])
        countries[card].add(event["country"])
        ips[card].add(event["ip"])
        if not event["is_fraud"]:
            legit[card].append(float(event["amount"]))
    assert len(first_of) >= 5
    assert checked_amounts >= 5


def test_amount_spike_far_above_the_card_history(events: list[Event]) -> None:
    spikes = {e["event_id"] for e in events if e["fraud_type"] == "amount_spike"}
    legit: dict[object, list[float]] = defaultdict(list)
    checked = 0
    for event in events:
        if event["event_id"] in spikes and legit[event["card_id"]]:
            history = legit[event["card_id"]]
            assert event["amount"] > 5 * max(history) >= 5 * statistics.median(history)
            checked += 1
        if not event["is_fraud"]:
            legit[event["card_id"]].append(float(event["amount"]))
    assert checked >= 0.8 * len(spikes) > 0


def test_card_and_merchant_activity_is_skewed(events: list[Event]) -> None:
    per_card = sorted(Counter(e["card_id"] for e in events).values(), reverse=True)
    top = per_card[: max(1, len(per_card) // 100)]
    assert statistics.mean(top) >= 5 * statistics.median(per_card)
    per_merchant = sorted(Counter(e["merchant_id"] for e in events).values(), reverse=True)
    assert per_merchant[0] >= 10 * statistics.median(per_merchant)


def test_legitimate_behaviour_is_habitual(events: list[Event]) -> None:
    devices: dict[object, set[object]] = defaultdict(set)
    ips: dict[object, set[object]] = defaultdict(set)
    countries: dict[object, Counter[object]] = defaultdict(Counter)
    for event in events:
        if not event["is_fraud"]:
            devices[event["card_id"]].add(event["device_id"])
            ips[event["card_id"]].add(event["ip"])
            countries[event["card_id"]][event["country"]] += 1
    assert max(len(found) for found in devices.values()) <= 2
    assert max(len(found) for found in ips.values()) <= 4
    at_home = sum(counts.most_common(1)[0][1] for counts in countries.values())
    assert at_home / sum(sum(c.values()) for c in countries.values()) > 0.97


def test_amounts_are_log_normal_per_category(events: list[Event]) -> None:
    amounts: dict[object, list[float]] = defaultdict(list)
    for event in events:
        if not event["is_fraud"]:
            amounts[event["merchant_category"]].append(float(event["amount"]))
    medians = {category: statistics.median(found) for category, found in amounts.items()}
    assert medians["travel"] > medians["electronics"] > 3 * medians["grocery"]
    assert medians["grocery"] > medians["pharmacy"]
    grocery = amounts["grocery"]
    assert statistics.mean(grocery) > statistics.median(grocery)  # right-skewed


def test_labels_arrive_later_and_reference_transactions(events: list[Event]) -> None:
    found = fraud.labels(events, seed=1)
    assert found == fraud.labels(events, seed=1)
    by_id = {e["event_id"]: e for e in events}
    frauds = {e["event_id"] for e in events if e["is_fraud"]}
    assert [label["ts"] for label in found] == sorted(label["ts"] for label in found)
    for label in found:
        assert set(label) == {"event_id", "card_id", "label", "ts", "tx_ts"}
        tx = by_id[label["event_id"]]
        assert label["card_id"] == tx["card_id"] and label["tx_ts"] == tx["ts"]
        assert label["label"] == (1 if tx["is_fraud"] else 0)
        delay = int(label["ts"]) - int(tx["ts"])
        assert HOUR_MS <= delay <= 31 * 24 * HOUR_MS
    assert {label["event_id"] for label in found if label["label"] == 1} == frauds
    legit_labels = sum(label["label"] == 0 for label in found)
    assert 0.005 < legit_labels / (len(events) - len(frauds)) < 0.015
    only_frauds = fraud.labels(events, legit_fraction=0.0)
    assert len(only_frauds) == len(frauds) and all(label["label"] == 1 for label in only_frauds)


def test_labels_of_one_attack_arrive_together(events: list[Event]) -> None:
    found = {label["event_id"]: label for label in fraud.labels(events)}
    for attack in attacks_of(events, "card_testing").values():
        times = [int(found[e["event_id"]]["ts"]) for e in attack]
        assert min(times) > max(int(e["ts"]) for e in attack)
        assert max(times) - min(times) <= HOUR_MS


def test_small_and_edge_counts() -> None:
    assert fraud.generate(0, seed=1, start_ms=START_MS) == []
    tiny = fraud.generate(10, seed=1, start_ms=START_MS, fraud_fraction=0.5)
    assert len(tiny) == 10 and sum(bool(e["is_fraud"]) for e in tiny) == 5
    assert all(int(e["ts"]) >= START_MS for e in tiny)
    only_fraud = fraud.generate(50, seed=1, start_ms=START_MS, fraud_fraction=1.0)
    assert len(only_fraud) == 50 and all(e["is_fraud"] for e in only_fraud)
    testing_only = fraud.generate(
        5000, seed=4, start_ms=START_MS, attack_mix={"card_testing": 1.0}, fraud_fraction=0.02
    )
    assert {e["fraud_type"] for e in testing_only if e["is_fraud"]} <= {
        "card_testing",
        "amount_spike",  # the last few events of the budget, too few for a burst
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {"count": -1},
        {"rate": 0.0},
        {"fraud_fraction": 1.5},
        {"jitter_ms": -1},
        {"merchants": 10},
        {"cards": 0},
        {"attack_mix": {"phishing": 1.0}},
    ],
)
def test_invalid_arguments_raise(kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = {"count": 10, "seed": 0, "start_ms": START_MS, **kwargs}
    with pytest.raises(ValueError):
        fraud.generate(**arguments)


def test_registry_entry_and_records() -> None:
    entry = GENERATORS["fraud"]
    assert entry.topic_default == "rtml.fraud.transactions"
    assert entry.labels_topic_default == "rtml.fraud.labels"
    assert entry.labels is fraud.labels and entry.key_of is fraud.key_of
    events = entry.generate(5, seed=1, start_ms=START_MS)
    records = list(as_records(events, entry.key_of))
    assert [r.key for r in records] == [str(e["card_id"]).encode() for e in events]
    assert b'"fraud_type": null' in records[0].value
