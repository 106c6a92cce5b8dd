"""Backtest scoring: every model through the live job's Scorer, in processes of their own or one
after the other, with the same predictions either way."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from rtml.backtest.model_folders import load_folder
from rtml.backtest.scoring import ScoringFailed, score_all, scoring_processes
from rtml.settings import BacktestSettings


def _model_folder(folder: Path, features: list[str], seed: int, threshold: float) -> Path:
    folder.mkdir(parents=True)
    x = np.random.default_rng(seed).normal(size=(80, len(features)))
    y = (x @ np.arange(1, len(features) + 1) > 0).astype(int)
    joblib.dump(LogisticRegression().fit(x, y), folder / "model.joblib")
    meta = {"name": "fraud", "version": str(seed), "feature_names": features}
    (folder / "metadata.json").write_text(json.dumps({**meta, "threshold": threshold}))
    return folder


def _rows(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    rows = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    rows.loc[7, "b"] = np.nan  # not sent to the server: the rule answers, saying why
    return rows


def test_processes_give_each_model_the_predictions_of_scoring_them_one_after_the_other(
    tmp_path: Path,
) -> None:
    models = [
        load_folder(_model_folder(tmp_path / "two", ["a", "b"], 1, 0.4), "candidate", "two"),
        load_folder(_model_folder(tmp_path / "three", ["c", "a", "b"], 2, 0.6), "production", "p"),
    ]
    rows = _rows(5000)
    # Small batches: several score() calls per model, as in a real run.
    settings = BacktestSettings(scoring_batch_size=700)
    stream = io.StringIO()
    apart = score_all(models, rows, settings, no_timeouts=True, stream=stream, processes=2)
    together = score_all(models, rows, settings, no_timeouts=True, processes=1)

    assert [p.model.name for p in apart] == ["two", "p"]  # the models' order, not finishing order
    for got, want, model in zip(apart, together, models, strict=True):
        assert len(got) == len(rows)
        np.testing.assert_array_equal(got.scores, want.scores)
        np.testing.assert_array_equal(got.decisions, want.decisions)
        assert (got.paths, got.model_versions, got.errors) == (
            want.paths, want.model_versions, want.errors,
        )  # fmt: skip
        assert got.threshold == want.threshold == model.threshold
        assert got.metrics["rows"] == len(rows) and got.metrics["primary"] == len(rows) - 1
        # ... and the scores are the estimator's own
        estimator = joblib.load(model.primary / "model.joblib")
        complete = rows[list(model.feature_names)].drop(index=7).to_numpy()
        sent = np.delete(got.scores, 7)
        np.testing.assert_allclose(sent, estimator.predict_proba(complete)[:, 1], rtol=1e-12)
        np.testing.assert_array_equal(got.decisions, got.scores >= model.threshold)
    assert apart[0].paths[7] == "default" and "missing features ['b']" in apart[0].errors[7]
    assert set(apart[1].model_versions) - {apart[1].model_versions[7]} == {"p/2"}
    assert stream.getvalue().splitlines()[-1].startswith("scoring: 10,000/10,000 events (100%)")


class _ExitsWhenLoaded:
    """Unpickled (by joblib.load in the scoring process), ends that process at once."""

    def __reduce__(self) -> tuple:
        return os._exit, (3,)


def test_a_scoring_process_that_fails_or_dies_is_an_error_naming_its_model(tmp_path: Path) -> None:
    good = load_folder(_model_folder(tmp_path / "good", ["a"], 1, 0.5), "candidate", "good")
    broken = load_folder(_model_folder(tmp_path / "broken", ["a"], 2, 0.5), "candidate", "broken")
    (broken.primary / "model.joblib").write_bytes(b"not a pickle")
    with pytest.raises(ScoringFailed, match=r"(?s)scoring broken failed:.*Traceback"):
        score_all([good, broken], _rows(100), BacktestSettings(), no_timeouts=True, processes=2)

    dies = load_folder(_model_folder(tmp_path / "dies", ["a"], 3, 0.5), "candidate", "dies")
    (dies.primary / "model.joblib").write_bytes(pickle.dumps(_ExitsWhenLoaded()))
    with pytest.raises(ScoringFailed, match=r"dies stopped without an answer \(exit code 3\)"):
        score_all([dies, good], _rows(100), BacktestSettings(), no_timeouts=True, processes=2)


def test_one_process_per_model_at_most_one_per_core_unless_set() -> None:
    cores = os.cpu_count() or 1
    assert scoring_processes(0, 2) == min(2, cores)
    assert scoring_processes(0, 1) == 1
    assert scoring_processes(1, 3) == 1
    assert scoring_processes(8, 3) == 3
    with pytest.raises(ValueError, match="backtest_scoring_processes"):
        BacktestSettings(backtest_scoring_processes=-1)
