"""Backtest metrics on small frames whose answers can be worked out by hand (no services)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rtml.backtest import metrics
from rtml.backtest.metrics import BacktestFrameError, ScoredModel

T0 = 1_795_000_000_000
CANDIDATE = ScoredModel("candidate-a", "candidate", 0.5, "fraud-candidate/1")
PRODUCTION = ScoredModel("production", "production", 0.3, "fraud/3")


def six_events() -> pd.DataFrame:
    """Two frauds, three confirmed legitimate events and one without a label.

    candidate at 0.5 flags events 0 and 2: tp 1 (e0), fp 1 (e2), fn 1 (e1), tn 3 (e3, e4, e5).
    """
    nan = float("nan")
    return pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(6)],
            "entity": ["card-1", "card-2", "card-1", "card-3", "card-2", "card-3"],
            "ts": [T0 + i * 1000 for i in range(6)],
            "label": [1.0, 1.0, 0.0, 0.0, nan, 0.0],
            "score:candidate-a": [0.9, 0.4, 0.6, 0.1, 0.2, 0.3],
            "decision:candidate-a": [True, False, True, False, False, False],
            "path:candidate-a": ["primary"] * 5 + ["fallback_model"],
            "score:production": [0.8, 0.35, 0.2, 0.25, 0.1, 0.5],
            "decision:production": [True, True, False, False, False, True],
            "path:production": ["primary", "primary", "default", "primary", "primary", "primary"],
            # production published a prediction for e0, e1, e3 and e4 only
            "recorded_score": [0.8, 0.35, nan, 0.25, 0.7, nan],
            "recorded_decision": [True, True, None, False, True, None],
            "recorded_version": ["fraud/3", "fraud/3", None, "fraud/2", "fraud/3", None],
        }
    )


def walk(value: Any) -> list[Any]:
    """Every leaf of a nested dict/list."""
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in walk(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in walk(item)]
    return [value]


# --- small metrics ------------------------------------------------------------------------------


def test_confusion_counts_and_rates_on_six_events() -> None:
    frame = six_events()
    labels = metrics.fraud_labels(frame["label"])
    assert labels.tolist() == [1, 1, 0, 0, 0, 0]  # the unlabelled event counts as legitimate
    result = metrics.at_threshold(labels, frame["score:candidate-a"].to_numpy(), 0.5)
    assert result == {
        "threshold": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5,
        "tp": 1, "fp": 1, "tn": 3, "fn": 1,
    }  # fmt: skip
    # at production's threshold 0.3, e5 (0.3, legitimate) is flagged too: score >= threshold
    lower = metrics.at_threshold(labels, frame["score:candidate-a"].to_numpy(), 0.3)
    assert (lower["tp"], lower["fp"], lower["tn"], lower["fn"]) == (2, 2, 2, 0)
    assert lower["precision"] == 0.5 and lower["recall"] == 1.0
    assert lower["f1"] == pytest.approx(2 / 3)


def test_rates_are_zero_without_positive_predictions_or_fraud() -> None:
    assert metrics.precision_recall_f1({"tp": 0, "fp": 0, "tn": 5, "fn": 2}) == {
        "precision": 0.0, "recall": 0.0, "f1": 0.0,
    }  # fmt: skip
    assert metrics.precision_recall_f1({"tp": 0, "fp": 3, "tn": 2, "fn": 0})["recall"] == 0.0


def test_label_counts_report_missing_labels_as_unlabelled() -> None:
    assert metrics.label_counts(six_events()["label"]) == {"fraud": 2, "legit": 3, "unlabelled": 1}


def test_auc_and_average_precision_by_hand() -> None:
    labels = np.array([1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.4, 0.6, 0.1, 0.2, 0.3])
    # pairs (fraud, legit) ranked right: 0.9 beats all 4, 0.4 beats 3 of 4 -> 7/8
    assert metrics.roc_auc(labels, scores) == pytest.approx(7 / 8)
    # ranks: 0.9 fraud (precision 1), 0.6 legit, 0.4 fraud (precision 2/3): (1 + 2/3) / 2
    assert metrics.average_precision(labels, scores) == pytest.approx(5 / 6)


def test_a_perfect_model_has_auc_and_average_precision_one() -> None:
    labels = np.array([0, 1, 0, 1, 0])
    scores = np.array([0.1, 0.8, 0.3, 0.9, 0.2])
    assert metrics.roc_auc(labels, scores) == 1.0
    assert metrics.average_precision(labels, scores) == 1.0
    assert metrics.roc_auc(labels, 1 - scores) == 0.0


def test_auc_and_curves_are_undefined_with_one_class() -> None:
    labels = np.zeros(4, dtype=int)
    scores = np.array([0.1, 0.2, 0.3, 0.4])
    assert metrics.roc_auc(labels, scores) is None
    assert metrics.average_precision(labels, scores) is None
    assert metrics.roc_points(labels, scores) is None
    assert metrics.pr_points(labels, scores) is None
    curve = metrics.roc_points(np.array([0, 1, 0, 1]), scores)
    assert curve is not None
    assert curve[0][0] == 0.0 and curve[1][-1] == 1.0


def test_psi_of_identical_distributions_is_zero() -> None:
    scores = np.random.default_rng(3).beta(1, 20, 1000)
    assert metrics.psi(scores, scores) == pytest.approx(0.0, abs=1e-12)
    assert metrics.psi(scores, scores.copy()[::-1]) == pytest.approx(0.0, abs=1e-12)


def test_psi_of_a_fully_shifted_distribution_by_hand() -> None:
    reference = np.arange(100) / 100  # deciles cut it into 10 bins of 10% each
    shifted = np.full(50, -1.0)  # everything in the lowest bin
    expected = (1 - 0.1) * math.log(1 / 0.1) + 9 * (1e-4 - 0.1) * math.log(1e-4 / 0.1)
    assert metrics.psi(shifted, reference) == pytest.approx(expected)
    assert metrics.psi(shifted, reference) > 0.25  # a large shift by the usual reading


def test_psi_of_a_constant_reference_and_empty_sides() -> None:
    constant = np.full(20, 0.05)  # e.g. every event scored by the default rule: one bin
    assert metrics.psi(constant, constant) == pytest.approx(0.0)
    assert metrics.psi(np.full(20, 0.9), constant) == pytest.approx(0.0)  # same (upper) bin
    assert metrics.psi(np.full(20, 0.01), constant) > 1  # all below: the other bin
    assert metrics.psi(np.array([]), constant) is None
    assert metrics.psi(constant, np.array([np.nan])) is None


def test_path_counts_and_fallback_rate() -> None:
    only_fallbacks = metrics.path_counts(["fallback_model", "default", "fallback_model"])
    assert only_fallbacks == {"primary": 0, "fallback_model": 2, "default": 1}
    assert metrics.fallback_rate(only_fallbacks) == 1.0
    assert metrics.fallback_rate(metrics.path_counts(["primary"] * 3 + ["default"])) == 0.25
    assert metrics.fallback_rate(metrics.path_counts([])) == 0.0


def test_agreement_compares_only_events_with_a_recorded_decision() -> None:
    recorded = pd.Series([True, True, None, False, True, None])
    result = metrics.agreement(np.array([True, False, True, False, False, False]), recorded)
    assert result == {"share": 0.5, "compared": 4, "agree": 2}  # e0 and e3 agree
    assert metrics.agreement(np.array([True]), pd.Series([np.nan])) == {
        "share": None, "compared": 0, "agree": 0,
    }  # fmt: skip


def test_score_quantiles() -> None:
    quantiles = metrics.score_quantiles(np.arange(101, dtype=float))
    assert quantiles == {"p01": 1.0, "p10": 10.0, "p50": 50.0, "p90": 90.0, "p99": 99.0}


def test_ranking_by_average_precision_then_auc_with_undefined_last() -> None:
    per_model = {
        "b": {"average_precision": 0.6, "auc": 0.90},
        "undefined": {"average_precision": None, "auc": None},
        "a": {"average_precision": 0.8, "auc": 0.70},
        "c": {"average_precision": 0.6, "auc": 0.95},
    }
    assert metrics.ranking(per_model) == ["a", "c", "b", "undefined"]


def test_production_reference_prefers_recorded_predictions() -> None:
    scores, decisions, source = metrics.production_reference(six_events(), PRODUCTION)
    assert source.tolist() == ["recorded"] * 2 + ["rescored"] + ["recorded"] * 2 + ["rescored"]
    assert scores.tolist() == [0.8, 0.35, 0.2, 0.25, 0.7, 0.5]
    assert decisions.tolist() == [True, True, False, False, True, True]
    without_production = metrics.production_reference(six_events(), None)
    assert without_production[2].tolist()[2] == "none"
    assert math.isnan(without_production[0][2])


# --- summarize ----------------------------------------------------------------------------------


def test_summarize_six_events() -> None:
    summary = metrics.summarize(six_events(), [CANDIDATE, PRODUCTION], top_disagreements=2)
    assert summary["events"] == 6
    assert summary["labelled"] == {"fraud": 2, "legit": 3, "unlabelled": 1}
    assert summary["production_threshold"] == 0.3
    assert summary["production_reference"] == {"recorded": 4, "rescored": 2, "none": 0}
    assert summary["recorded"] == {"events": 4, "versions": {"fraud/2": 1, "fraud/3": 3}}

    candidate = summary["models"]["candidate-a"]
    assert (candidate["role"], candidate["version"], candidate["threshold"]) == (
        "candidate", "fraud-candidate/1", 0.5,
    )  # fmt: skip
    assert candidate["auc"] == pytest.approx(7 / 8)
    assert candidate["average_precision"] == pytest.approx(5 / 6)
    assert candidate["at_threshold"]["tp"] == 1 and candidate["at_threshold"]["fn"] == 1
    assert candidate["at_production_threshold"]["threshold"] == 0.3
    assert candidate["at_production_threshold"]["recall"] == 1.0
    assert candidate["paths"] == {"primary": 5, "fallback_model": 1, "default": 0}
    assert candidate["fallback_rate"] == pytest.approx(1 / 6)
    assert candidate["agreement"] == {"share": 0.5, "compared": 4, "agree": 2}
    assert candidate["psi"] > 0
    assert set(candidate["score_quantiles"]) == {"p01", "p10", "p50", "p90", "p99"}

    production = summary["models"]["production"]
    # production's own decisions vs what it published: e0, e1, e3 agree; e4 does not
    assert production["agreement"] == {"share": 0.75, "compared": 4, "agree": 3}
    assert production["fallback_rate"] == pytest.approx(1 / 6)

    assert summary["ranking"] == ["candidate-a", "production"]
    assert list(summary["top_disagreements"]) == ["candidate-a"]  # candidates only
    top = summary["top_disagreements"]["candidate-a"]
    # gaps against the reference: e0 .1, e1 .05, e2 .4 (rescored), e3 .15, e4 .5, e5 .2
    assert [row["event_id"] for row in top] == ["e4", "e2"]
    assert top[0] == {
        "event_id": "e4", "entity": "card-2", "ts": T0 + 4000, "label": None,
        "candidate_score": 0.2, "production_score": 0.7, "difference": pytest.approx(-0.5),
        "candidate_decision": False, "production_decision": True,
        "production_source": "recorded",
    }  # fmt: skip
    assert top[1]["production_source"] == "rescored"


def test_summary_is_plain_json() -> None:
    summary = metrics.summarize(six_events(), [CANDIDATE, PRODUCTION])
    json.dumps(summary, allow_nan=False)
    assert all(type(leaf) in (str, int, float, bool, type(None)) for leaf in walk(summary))


def test_without_a_production_model_the_production_threshold_is_skipped() -> None:
    frame = six_events()
    frame["recorded_score"] = np.nan
    frame["recorded_decision"] = None
    summary = metrics.summarize(frame, [CANDIDATE])
    assert summary["production_threshold"] is None
    assert "at_production_threshold" not in summary["models"]["candidate-a"]
    assert summary["models"]["candidate-a"]["psi"] is None  # nothing to compare with
    assert summary["models"]["candidate-a"]["agreement"]["compared"] == 0
    assert summary["top_disagreements"] == {"candidate-a": []}
    json.dumps(summary, allow_nan=False)


def test_a_model_scored_only_by_fallbacks() -> None:
    frame = six_events()
    frame["path:candidate-a"] = ["fallback_model", "default"] * 3
    summary = metrics.summarize(frame, [CANDIDATE, PRODUCTION])
    assert summary["models"]["candidate-a"]["fallback_rate"] == 1.0


def test_as_decided_counts_the_decision_column() -> None:
    frame = six_events()
    # a fallback with its own threshold flagged e1 although its score is below 0.5
    frame.loc[1, "decision:candidate-a"] = True
    candidate = metrics.summarize(frame, [CANDIDATE, PRODUCTION])["models"]["candidate-a"]
    assert candidate["at_threshold"]["tp"] == 1
    assert candidate["as_decided"]["tp"] == 2 and candidate["as_decided"]["recall"] == 1.0


def test_one_class_gives_undefined_auc_not_an_error() -> None:
    frame = six_events()
    frame["label"] = 0.0
    summary = metrics.summarize(frame, [CANDIDATE, PRODUCTION])
    assert summary["models"]["candidate-a"]["auc"] is None
    assert summary["models"]["candidate-a"]["average_precision"] is None
    json.dumps(summary, allow_nan=False)


# --- bad input ----------------------------------------------------------------------------------


def test_an_empty_frame_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no events"):
        metrics.summarize(six_events().iloc[0:0], [CANDIDATE, PRODUCTION])


def test_missing_columns_are_named() -> None:
    frame = six_events().drop(columns=["path:production", "label"])
    with pytest.raises(BacktestFrameError, match="no column.*label, path:production"):
        metrics.summarize(frame, [CANDIDATE, PRODUCTION])


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("label", 2.0, "labels must be 1 .fraud., 0 .legitimate. or NaN.*'e3'"),
        ("score:candidate-a", float("nan"), "score:candidate-a: 1 score.*'e3'"),
        ("score:production", float("inf"), "score:production: 1 score"),
        ("decision:production", None, "decision:production has missing decisions"),
        ("path:candidate-a", "fallback", "unknown path.*'fallback'"),
        ("decision:candidate-a", "false", "decision:candidate-a must hold True or False.*'false'"),
        ("recorded_decision", "yes", "recorded_decision must hold True or False.*'yes'"),
        ("ts", None, "ts must be epoch milliseconds"),
    ],
)
def test_bad_values_are_clear_errors(column: str, value: object, message: str) -> None:
    frame = six_events()
    frame[column] = frame[column].astype(object)
    frame.loc[3, column] = value
    with pytest.raises(BacktestFrameError, match=message):
        metrics.summarize(frame, [CANDIDATE, PRODUCTION])


def test_bad_model_lists_are_clear_errors() -> None:
    frame = six_events()
    with pytest.raises(BacktestFrameError, match="no models"):
        metrics.summarize(frame, [])
    with pytest.raises(BacktestFrameError, match="unique; repeated: candidate-a"):
        metrics.summarize(frame, [CANDIDATE, CANDIDATE])
    with pytest.raises(BacktestFrameError, match="more than one model has role 'production'"):
        metrics.summarize(frame, [PRODUCTION, ScoredModel("p2", "production", 0.5)])
    with pytest.raises(BacktestFrameError, match="role must be one of candidate, production"):
        ScoredModel("x", "challenger", 0.5)
    with pytest.raises(BacktestFrameError, match="not finite"):
        ScoredModel("x", "candidate", float("nan"))
