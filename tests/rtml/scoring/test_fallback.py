"""The rule and the local fallback model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from rtml import model_repo
from rtml.scoring.fallback import DefaultRule, FallbackModel, sigmoid


def test_rule_is_a_logistic_score_where_missing_features_add_nothing() -> None:
    rule = DefaultRule({"a": 2.0, "c": -1.0}, bias=-1.0)
    values = np.array([[1.0, 5.0, 3.0], [np.nan, 5.0, 3.0], [np.nan, np.nan, np.inf]])
    scores = rule.scores(values, ("a", "b", "c"))
    np.testing.assert_allclose(scores, sigmoid(np.array([-2.0, -4.0, -1.0])))
    np.testing.assert_array_equal(scores, rule.scores(values, ("a", "b", "c")))  # deterministic


def test_default_rule_is_a_low_constant() -> None:
    scores = DefaultRule().scores(np.array([[1e9], [np.nan]]), ("x",))
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(4.0)))
    assert scores[0] < 0.05


def test_sigmoid_does_not_overflow() -> None:
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        np.testing.assert_allclose(sigmoid(np.array([-1e6, 0.0, 1e6])), [0.0, 0.5, 1.0])


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match="finite"):
        DefaultRule({"a": float("nan")})
    with pytest.raises(ValueError, match="unknown"):
        DefaultRule({"zz": 1.0}).check(("a",))


def _publish(tmp_path: Path, model: object, names: list[str]) -> Path:
    return model_repo.publish_sklearn_model(model, tmp_path, "fraud-fallback", "3",
                                            feature_names=names)  # fmt: skip


def test_fallback_model_loads_a_published_version_and_scores_like_the_estimator(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    model = LogisticRegression().fit(x, x[:, 0] > 0)
    fallback = FallbackModel.load(_publish(tmp_path, model, ["b", "a"]))
    assert fallback.version == "fraud-fallback/3" and fallback.feature_names == ("b", "a")
    assert fallback.columns(("a", "b", "c")) == [1, 0]
    assert fallback.allow_nan is False
    np.testing.assert_array_equal(fallback.scores(x[:5]), model.predict_proba(x[:5])[:, 1])
    with pytest.raises(ValueError, match="needs features"):
        fallback.columns(("a", "c"))


def test_fallback_model_that_takes_nan(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 2))
    model = HistGradientBoostingClassifier(max_iter=5).fit(x, x[:, 1] > 0)
    assert FallbackModel.load(_publish(tmp_path, model, ["a", "b"])).allow_nan is True


def test_fallback_model_load_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot load the fallback model"):
        FallbackModel.load(tmp_path / "nope")
