"""The fraud demo's summaries of its predictions (pure)."""

from __future__ import annotations

from rtml.fraud_demo import (
    events_that_fit,
    fallback_reasons,
    flagged_table,
    offset_ranges,
    summarize,
)


def tx(n: int, card: str, fraud: bool = False, kind: str | None = None) -> dict:
    return {
        "event_id": f"tx-{n}", "card_id": card, "amount": 10.0 + n, "is_fraud": fraud,
        "fraud_type": kind,
    }  # fmt: skip


def pred(n: int, score: float, path: str = "primary", error: str | None = None) -> dict:
    return {
        "event_id": f"tx-{n}", "score": score, "decision": score >= 0.5, "path": path,
        "error": error,
    }  # fmt: skip


EVENTS = [
    tx(1, "card-a", True, "card_testing"),
    tx(2, "card-a", True, "card_testing"),
    tx(3, "card-a", True, "card_testing"),
    tx(4, "card-b"),
    tx(5, "card-c", True, "amount_spike"),
    tx(6, "card-d"),
]


def test_summarize_counts_this_runs_predictions_once_and_matches_them_with_the_truth() -> None:
    predictions = [
        pred(1, 0.9), pred(2, 0.8), pred(3, 0.7, "fallback_model", "primary: breaker open"),
        pred(4, 0.6), pred(5, 0.1, "default", "primary: timeout after 40 ms"),
        pred(1, 0.9),  # a duplicate
        {"event_id": "tx-999", "score": 1.0, "decision": True, "path": "primary"},  # another run
    ]  # fmt: skip
    summary = summarize(EVENTS, predictions)
    assert (summary.events, summary.predicted, summary.duplicates) == (6, 5, 1)
    assert (summary.flagged, summary.fraud, summary.flagged_fraud) == (4, 4, 3)
    assert summary.paths == {"primary": 3, "fallback_model": 1, "default": 1}
    assert summary.fallback_rate == 2 / 5
    assert summary.precision == 3 / 4 and summary.recall == 3 / 4


def test_summarize_without_predictions_has_no_ratios() -> None:
    summary = summarize(EVENTS, [])
    assert summary.predicted == 0 and summary.fallback_rate == 0.0
    assert summary.precision is None and summary.recall == 0.0


def test_fallback_reasons_add_up_whatever_the_numbers() -> None:
    predictions = [
        pred(1, 0.2, "fallback_model", "primary: timeout after 36 ms (3 attempts)"),
        pred(2, 0.2, "fallback_model", "primary: timeout after 41 ms (2 attempts)"),
        pred(3, 0.2, "default", "primary: breaker open"),
        pred(4, 0.2),
        pred(999, 0.2, "default", "not this run"),
    ]
    assert fallback_reasons(EVENTS, predictions) == {
        "primary: timeout after N ms (N attempts)": 2,
        "primary: breaker open": 1,
    }


def test_flagged_table_shows_the_highest_scores_at_most_two_per_card() -> None:
    predictions = [pred(1, 0.99), pred(2, 0.98), pred(3, 0.97), pred(4, 0.2), pred(5, 0.6)]
    features = {"tx-1": {"tx_count_1m": 7, "country_new_24h": True, "amount_vs_avg_24h": 0.25}}
    lines = flagged_table(
        EVENTS,
        predictions,
        features,
        columns=["tx_count_1m", "country_new_24h", "amount_vs_avg_24h"],
    )
    assert lines[0].split() == [
        "EVENT", "CARD", "AMOUNT", "SCORE", "PATH", "INJECTED", "tx_count_1m", "country_new_24h",
        "amount_vs_avg_24h",
    ]  # fmt: skip
    rows = [line.split() for line in lines[1:]]
    assert [row[0] for row in rows] == ["tx-1", "tx-2", "tx-5"]  # tx-3: a third card-a; tx-4: 0.2
    assert rows[0] == ["tx-1", "card-a", "11.00", "0.990", "primary", "card_testing", "7", "yes",
                       "0.25"]  # fmt: skip
    assert rows[1][-3:] == ["-", "-", "-"]  # no feature row read for it
    assert len({len(line) for line in lines}) == 1  # aligned columns


def test_offset_ranges_name_what_was_written_per_partition() -> None:
    assert offset_ranges({0: 10, 1: 7, 2: 5}, {0: 25, 1: 7, 2: 6, 3: 4}) == "0:10-25,2:5-6,3:0-4"
    assert offset_ranges({0: 3}, {0: 3}) == ""


def test_events_that_fit_after_an_earlier_run_at_the_training_rate() -> None:
    now = 1_000_000_000
    assert events_that_fit(5000, now, None) == 5000
    assert events_that_fit(5000, now, now - 10 * 3600_000) == 5000  # long ago: all fit
    assert events_that_fit(5000, now, now - 601_000) == 1200  # 600 s of room at 2 per second
    assert events_that_fit(5000, now, now - 500) == 0
    assert events_that_fit(5000, now, now + 3600_000) == 0  # dated in the future
