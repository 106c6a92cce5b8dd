"""The two fallbacks behind the model server: a local model from its artifact, then a rule.

`FallbackModel` loads a scikit-learn model published with `rtml.model_repo` (the folder holding
`model.joblib` and `metadata.json`) and scores in-process, no network. It takes only complete rows
unless the estimator accepts NaN itself (e.g. HistGradientBoostingClassifier).

`DefaultRule` is the last resort and never fails: a fixed logistic score of the features,
``sigmoid(bias + sum(weight[f] * x[f]))``, where a missing (or non-finite) feature adds nothing.
Without weights it is the constant ``sigmoid(bias)``; the default bias -4 gives 0.018, "probably
fine", so an outage does not flag every event. Same features, same score, always.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rtml import model_repo


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) without overflow for large |z|."""
    return np.exp(-np.logaddexp(0.0, -z))


@dataclass(frozen=True)
class DefaultRule:
    """A deterministic logistic score from named features; missing features contribute nothing."""

    weights: Mapping[str, float] = field(default_factory=dict)
    bias: float = -4.0
    version: str = "rule/1"  # recorded on its predictions as the model version

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", dict(self.weights))
        for name, weight in self.weights.items():
            if not np.isfinite(weight):
                raise ValueError(f"rule weight of {name!r} must be finite, not {weight}")
        if not np.isfinite(self.bias):
            raise ValueError(f"rule bias must be finite, not {self.bias}")

    def check(self, feature_names: Sequence[str]) -> None:
        unknown = set(self.weights) - set(feature_names)
        if unknown:
            raise ValueError(f"rule weights for unknown features: {sorted(unknown)}")

    def scores(self, values: np.ndarray, feature_names: Sequence[str]) -> np.ndarray:
        """The rule's score of each row of `values` (columns in `feature_names` order)."""
        logit = np.full(values.shape[0], float(self.bias))
        for j, name in enumerate(feature_names):
            weight = self.weights.get(name)
            if weight:
                column = values[:, j]
                logit += weight * np.where(np.isfinite(column), column, 0.0)
        return sigmoid(logit)


class FallbackModel:
    """A scikit-learn model scored in-process, loaded from a published model version folder."""

    def __init__(
        self,
        estimator: Any,
        feature_names: Sequence[str],
        version: str,
        score_column: int = 1,
        path: Path | None = None,
        threshold: float | None = None,
    ) -> None:
        self.estimator = estimator
        self.feature_names = tuple(feature_names)
        self.version = version
        self.score_column = score_column
        self.path = path
        # Its own decision threshold (a model trained apart has scores on its own scale); None:
        # it decides with the scorer's.
        self.threshold = threshold
        self.allow_nan = _allows_nan(estimator)

    @classmethod
    def load(cls, path: Path | str, score_column: int = 1) -> FallbackModel:
        """Load `path/model.joblib` and `path/metadata.json` (as `publish_sklearn_model` writes)."""
        import joblib

        folder = Path(path)
        try:
            metadata = model_repo.read_metadata(folder)
            estimator = joblib.load(folder / model_repo.MODEL_FILENAME)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot load the fallback model from {folder}: {error}") from error
        return cls(
            estimator, metadata.feature_names, metadata.version, score_column, folder,
            threshold=metadata.threshold,
        )  # fmt: skip

    def columns(self, feature_names: Sequence[str]) -> list[int]:
        """Where this model's features are among `feature_names`; ValueError if some are not."""
        missing = [name for name in self.feature_names if name not in feature_names]
        if missing:
            raise ValueError(f"fallback model {self.version} needs features {missing}, not given")
        return [list(feature_names).index(name) for name in self.feature_names]

    def scores(self, values: np.ndarray) -> np.ndarray:
        """Scores of rows whose columns are in this model's feature order."""
        if hasattr(self.estimator, "predict_proba"):
            proba = np.asarray(self.estimator.predict_proba(values), dtype=np.float64)
            column = self.score_column if proba.shape[1] > 1 else 0
            return proba[:, column]
        return np.asarray(self.estimator.predict(values), dtype=np.float64).reshape(-1)


def _allows_nan(estimator: Any) -> bool:
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(estimator).input_tags.allow_nan)
    except Exception:  # noqa: BLE001 - not a recent sklearn estimator: assume it rejects NaN
        return False
