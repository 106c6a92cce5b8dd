"""Training on a small synthetic frame: time split, threshold, metrics, metadata (no services)."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from rtml.training import models
from rtml.training.models import TrainingError

T0 = 1_795_000_000_000


def synthetic(rows: int = 600, seed: int = 1) -> pd.DataFrame:
    """Fraud is a burst of transactions at many merchants with a high amount ratio."""
    rng = np.random.default_rng(seed)
    fraud = rng.random(rows) < 0.08
    frame = pd.DataFrame(
        {
            "card_id": [f"card-{i % 40}" for i in range(rows)],
            "event_id": [f"tx-{i}" for i in range(rows)],
            "ts": T0 + np.arange(rows) * 1000,
            "amount": np.where(fraud, rng.uniform(200, 900, rows), rng.uniform(5, 120, rows)),
            "amount_vs_avg_24h": np.where(
                fraud, rng.uniform(3, 9, rows), rng.uniform(0.3, 2, rows)
            ),
            "tx_count_5m": np.where(fraud, rng.integers(4, 12, rows), rng.integers(1, 4, rows)),
            "merchants_5m": rng.integers(1, 4, rows),
            "country": "US",  # text: not a feature
        }
    )
    labels = {event_id: 1 for event_id in frame.loc[fraud, "event_id"]}
    return models.join_labels(frame, labels, id_column="event_id")


def test_join_labels_treats_unlabelled_and_zero_as_legitimate() -> None:
    frame = pd.DataFrame({"event_id": ["a", "b", "c"], "x": [1, 2, 3]})
    joined = models.join_labels(frame, {"a": 1, "b": 0}, id_column="event_id")
    assert joined["label"].tolist() == [1, 0, 0]
    assert models.label_map([{"event_id": "a", "label": 0}, {"event_id": "a", "label": 1}]) == {
        "a": 1
    }
    with pytest.raises(TrainingError, match="no column 'id'"):
        models.join_labels(frame, {}, id_column="id")


def test_feature_columns_are_the_numeric_ones_in_order() -> None:
    frame = synthetic(20)
    assert models.feature_columns(frame, ["ts", "label"]) == [
        "amount", "amount_vs_avg_24h", "tx_count_5m", "merchants_5m",
    ]  # fmt: skip


def test_split_by_time_keeps_the_newest_rows_for_testing() -> None:
    frame = synthetic(100).sample(frac=1.0, random_state=0)  # shuffled: the split sorts by time
    split = models.split_by_time(frame, "ts")
    assert [len(split.train), len(split.validation), len(split.test)] == [60, 20, 20]
    assert split.train["ts"].max() < split.validation["ts"].min() == split.boundaries_ms[0]
    assert split.validation["ts"].max() < split.test["ts"].min() == split.boundaries_ms[1]
    with pytest.raises(TrainingError, match="too few"):
        models.split_by_time(frame.head(5), "ts")


def test_threshold_maximizes_f1_and_metrics_count_the_confusion() -> None:
    labels = np.array([0, 0, 0, 1, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.8, 0.9])
    threshold = models.choose_threshold(labels, scores)
    assert threshold == 0.4  # everything from 0.4 up: tp 3, fp 1 -> F1 0.857 (0.8 up: 0.8)
    metrics = models.evaluate(labels, scores, threshold)
    assert (metrics["tp"], metrics["fp"], metrics["fn"], metrics["tn"]) == (3, 1, 0, 3)
    assert metrics["precision"] == 0.75 and metrics["recall"] == 1.0
    assert metrics["roc_auc"] == pytest.approx(11 / 12)
    assert models.evaluate(np.zeros(3), np.array([0.1, 0.2, 0.3]), 0.5)["roc_auc"] is None
    with pytest.raises(TrainingError, match="no positive label"):
        models.choose_threshold(np.zeros(3), np.array([0.1, 0.2, 0.3]))


def test_train_fits_both_models_that_separate_the_classes(tmp_path: Path) -> None:
    frame = synthetic()
    split, primary, fallback = models.train(
        frame, time_column="ts", exclude=["card_id", "event_id"], seed=0
    )
    assert primary.features == ["amount", "amount_vs_avg_24h", "tx_count_5m", "merchants_5m"]
    assert fallback.features == primary.features  # all four are fallback features
    for model in (primary, fallback):
        assert model.metrics["test"]["roc_auc"] > 0.95
        assert model.metrics["test"]["rows"] == len(split.test)
        assert 0.0 < model.threshold < 1.0

    meta = models.metadata(primary, frame, name="fraud", version="3", training={"seed": 0})
    folder = models.save(primary, tmp_path / "primary", meta)
    written = json.loads((folder / "metadata.json").read_text())
    assert written["feature_names"] == primary.features
    assert written["feature_schema"][2] == {"name": "tx_count_5m", "dtype": "int64"}
    assert written["input"] == {"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}
    assert written["threshold"] == primary.threshold
    assert written["threshold_rule"] == models.THRESHOLD_RULE
    assert set(written["metrics"]) == {"validation", "test"}
    loaded = joblib.load(folder / "model.joblib")
    rows = models.matrix(split.test, primary.features)
    assert np.array_equal(loaded.predict_proba(rows)[:, 1], primary.scores(split.test))


def test_one_class_or_no_features_is_a_clear_error() -> None:
    frame = synthetic()
    frame["label"] = 0
    with pytest.raises(TrainingError, match="holds only label 0"):
        models.train(frame, time_column="ts", exclude=["card_id", "event_id"])
    with pytest.raises(TrainingError, match="no numeric feature"):
        models.train(frame[["event_id", "ts", "label"]], time_column="ts", exclude=["event_id"])


def test_jsonable_turns_nan_into_null() -> None:
    assert models.jsonable({"a": float("nan"), "b": [np.float64(1.5), np.int64(2)]}) == {
        "a": None, "b": [1.5, 2],
    }  # fmt: skip


def test_next_version_counts_integer_versions(tmp_path: Path) -> None:
    assert models.next_version(tmp_path, "fraud") == "1"
    for name in ("1", "2", "10", ".3.tmp-x"):
        (tmp_path / "fraud" / name).mkdir(parents=True)
    assert models.next_version(tmp_path, "fraud") == "11"
