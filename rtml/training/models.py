"""Training a primary and a fallback classifier on a feature frame (pure: no I/O but `save`).

The frame is what `rtml.offline.compute_features` returns, joined with labels: one row per event,
numeric feature columns, a 0/1 label and the event time. The split is by time (train on the past,
choose the threshold on the next slice, report metrics on the newest), as the model will score
events that come after everything it was trained on.

- primary: scikit-learn's HistGradientBoostingClassifier on every numeric feature (served by
  MLServer's sklearn runtime, so only scikit-learn and numpy objects are pickled);
- fallback: a standardized logistic regression on a few robust features, loaded in-process by the
  scoring operator when the model server cannot answer in time.

Threshold rule: the score that maximizes F1 on the validation slice (ties: the higher threshold).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

LABEL = "label"
THRESHOLD_RULE = "max F1 on the validation slice"
# Few, robust signals for the fallback: the amount against the card's own history and short-term
# velocity. Those present in the frame are used.
FALLBACK_FEATURES = (
    "amount",
    "amount_vs_avg_24h",
    "tx_count_1m",
    "tx_count_5m",
    "merchants_5m",
)
SPLIT = (0.6, 0.2, 0.2)  # train, validation (threshold), test (reported metrics), by time


class TrainingError(ValueError):
    """The data cannot train a model (too few rows, one class only, no features)."""


@dataclass(frozen=True)
class Split:
    """Train, validation and test slices by time, and the event times where they meet."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    boundaries_ms: tuple[int, int]  # first event time of validation, of test


@dataclass
class TrainedModel:
    """A fitted model, the features it reads (in order), its threshold and its metrics."""

    role: str  # "primary" or "fallback"
    model: Any
    features: list[str]
    threshold: float
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # validation, test

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        """P(label = 1) for each row of `frame`."""
        return self.model.predict_proba(matrix(frame, self.features))[:, 1]


def label_map(labels: Iterable[Mapping[str, object]]) -> dict[str, int]:
    """event id -> label; a later label for the same event replaces an earlier one."""
    return {str(label["event_id"]): int(str(label["label"])) for label in labels}


def next_version(repo_dir: Path, name: str) -> str:
    """One more than the newest integer version of `name` in the repository ("1" if none)."""
    folder = repo_dir / name
    versions = (
        [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    )
    return str(max(versions, default=0) + 1)


def feature_columns(frame: pd.DataFrame, exclude: Sequence[str]) -> list[str]:
    """The numeric columns of `frame` (in order) other than `exclude`: the model's features.

    Booleans count as numbers; text, timestamps and arrays are not features.
    """
    return [
        name
        for name in frame.columns
        if name not in exclude
        and (pd.api.types.is_numeric_dtype(frame[name]) or pd.api.types.is_bool_dtype(frame[name]))
    ]


def join_labels(
    features: pd.DataFrame, labels: Mapping[str, int], *, id_column: str
) -> pd.DataFrame:
    """`features` with a 0/1 `label` column: 1 where `labels[event id]` is 1, else 0.

    Labels arrive late and only some legitimate events get a 0: an event without a label is
    treated as legitimate, as a chargeback process would by its cut-off.
    """
    if id_column not in features:
        raise TrainingError(f"no column {id_column!r} to join labels on")
    out = features.copy()
    out[LABEL] = [1 if labels.get(str(i)) == 1 else 0 for i in out[id_column]]
    return out


def split_by_time(
    frame: pd.DataFrame, time_column: str, fractions: tuple[float, float, float] = SPLIT
) -> Split:
    """Oldest `fractions[0]` of rows to train, the next to validate, the newest to test."""
    if len(frame) < 10:
        raise TrainingError(f"{len(frame)} rows are too few to split into train/validation/test")
    ordered = frame.sort_values(time_column, kind="stable").reset_index(drop=True)
    first = int(len(ordered) * fractions[0])
    second = int(len(ordered) * (fractions[0] + fractions[1]))
    parts = ordered.iloc[:first], ordered.iloc[first:second], ordered.iloc[second:]
    times = ordered[time_column]
    return Split(*parts, boundaries_ms=(int(times.iloc[first]), int(times.iloc[second])))


def matrix(frame: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    """The FP64 matrix a model is fed: columns in `features` order (as the model server gets)."""
    missing = [name for name in features if name not in frame]
    if missing:
        raise TrainingError(f"features missing from the frame: {missing}")
    return frame[list(features)].to_numpy(dtype=np.float64, na_value=np.nan)


def choose_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold (predict 1 when score >= threshold) with the best F1 on these rows."""
    from sklearn.metrics import precision_recall_curve

    labels = np.asarray(labels)
    if labels.sum() == 0:
        raise TrainingError("no positive label in the validation slice: cannot choose a threshold")
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    best = np.flatnonzero(f1[:-1] == f1[:-1].max())[-1]  # the last point has no threshold
    return float(thresholds[best])


def evaluate(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """ROC AUC, PR AUC (average precision), precision/recall/F1 at `threshold`, confusion counts.

    AUCs are None when the rows hold only one class (they are undefined then).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.asarray(labels).astype(int)
    predicted = np.asarray(scores) >= threshold
    tp = int(np.sum(predicted & (labels == 1)))
    fp = int(np.sum(predicted & (labels == 0)))
    fn = int(np.sum(~predicted & (labels == 1)))
    tn = int(np.sum(~predicted & (labels == 0)))
    both = 0 < labels.sum() < len(labels)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "rows": int(len(labels)),
        "positives": int(labels.sum()),
        "roc_auc": float(roc_auc_score(labels, scores)) if both else None,
        "pr_auc": float(average_precision_score(labels, scores)) if both else None,
        "threshold": threshold,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def primary_estimator(seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    # early_stopping off: with few positives a held-out 10% may hold none; max_iter stays small.
    return HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.1, max_leaf_nodes=15, l2_regularization=1.0,
        early_stopping=False, random_state=seed,
    )  # fmt: skip


def fallback_estimator(seed: int) -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # The imputer lets the fallback score rows with a missing (NaN) feature: it is the path of
    # last resort before the rule-based default, so it should not fail where the primary can't.
    return make_pipeline(
        SimpleImputer(strategy="median"),
        StandardScaler(),
        LogisticRegression(max_iter=1000, class_weight="balanced", random_state=seed),
    )


def fit(
    role: str, estimator: Any, split: Split, features: Sequence[str], label: str = LABEL
) -> TrainedModel:
    """Fit on the train slice, choose the threshold on validation, evaluate on both."""
    y_train = split.train[label].to_numpy()
    if len(set(y_train.tolist())) < 2:
        raise TrainingError(
            f"the train slice ({len(y_train)} rows) holds only label {y_train[0]}: "
            "generate more events or a higher fraud fraction"
        )
    estimator.fit(matrix(split.train, features), y_train)
    model = TrainedModel(role, estimator, list(features), threshold=0.5)
    validation_scores = model.scores(split.validation)
    y_validation = split.validation[label].to_numpy()
    model.threshold = choose_threshold(y_validation, validation_scores)
    model.metrics = {
        "validation": evaluate(y_validation, validation_scores, model.threshold),
        "test": evaluate(split.test[label].to_numpy(), model.scores(split.test), model.threshold),
    }
    return model


def train(
    frame: pd.DataFrame, *, time_column: str, exclude: Sequence[str], seed: int = 0
) -> tuple[Split, TrainedModel, TrainedModel]:
    """Split by time and fit the primary (all features) and the fallback (a few) models."""
    features = feature_columns(frame, [*exclude, LABEL, time_column])
    if not features:
        raise TrainingError(f"no numeric feature column in {list(frame.columns)}")
    fallback_features = [name for name in FALLBACK_FEATURES if name in features]
    if not fallback_features:
        raise TrainingError(f"none of the fallback features {FALLBACK_FEATURES} in {features}")
    split = split_by_time(frame, time_column)
    primary = fit("primary", primary_estimator(seed), split, features)
    fallback = fit("fallback", fallback_estimator(seed), split, fallback_features)
    return split, primary, fallback


def metadata(
    model: TrainedModel,
    frame: pd.DataFrame,
    *,
    name: str,
    version: str,
    training: Mapping[str, Any],
    created_at: datetime | None = None,
) -> dict[str, Any]:
    """What a scorer needs next to the artifact: features in order, types, threshold, metrics."""
    import sklearn

    return {
        "name": name,
        "version": version,
        "role": model.role,
        "model_class": f"{type(model.model).__module__}.{type(model.model).__qualname__}",
        "sklearn_version": sklearn.__version__,
        "feature_names": list(model.features),
        "feature_schema": [{"name": f, "dtype": str(frame[f].dtype)} for f in model.features],
        # As the model server gets it: one FP64 tensor, columns in feature_names order.
        "input": {"name": "input-0", "datatype": "FP64", "shape": [-1, len(model.features)]},
        "output": {"name": "predict_proba", "positive_class_column": 1},
        "threshold": model.threshold,
        "threshold_rule": THRESHOLD_RULE,
        "metrics": model.metrics,
        "training": dict(training),
        "created_at": (created_at or datetime.now(UTC)).isoformat(),
    }


def save(model: TrainedModel, folder: Path, meta: Mapping[str, Any]) -> Path:
    """Write `folder/model.joblib` and `folder/metadata.json`; returns the folder."""
    import joblib

    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model.model, folder / "model.joblib")
    (folder / "metadata.json").write_text(json.dumps(jsonable(meta), indent=2) + "\n")
    return folder


def jsonable(value: Any) -> Any:
    """NaN and infinities (e.g. an undefined metric) become null: metadata stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return jsonable(value.item())
    return value
