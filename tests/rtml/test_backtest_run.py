"""The backtest's pure parts: label and prediction joins, the frame, parity, progress, model
folders, and candidates scored through the live job's Scorer on the loopback V2 server."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from rtml.backtest import joins, parity
from rtml.backtest.local_server import LocalV2Server, ServedModel, route
from rtml.backtest.model_folders import (
    ModelFolderError,
    check_features,
    load_folder,
    unique_names,
)
from rtml.backtest.progress import Progress, format_duration, render
from rtml.backtest.scoring import NO_TIMEOUT_MS, scoring_settings
from rtml.settings import BacktestSettings


def _json(**fields: object) -> bytes:
    return json.dumps(fields).encode()


# -- labels and recorded predictions --------------------------------------------------------------


def test_labels_later_replaces_earlier_and_the_cutoff_leaves_late_ones_out() -> None:
    values = [
        _json(event_id="e1", label=0, ts=100),
        _json(event_id="e1", label=1, ts=200),  # a chargeback after an "ok"
        _json(event_id="e2", label=1, ts=900),  # reported after the cut-off
        b"{not json",
        _json(event_id="e3", label=7, ts=1),
        None,
    ]
    labels = joins.read_labels(values, until_ms=500)
    assert labels.by_event == {"e1": 1.0}
    assert (labels.records, labels.after_cutoff, labels.malformed) == (6, 1, 3)
    assert joins.read_labels(values).by_event == {"e1": 1.0, "e2": 1.0}


def test_recorded_predictions_last_one_wins_and_duplicates_are_counted() -> None:
    values = [
        _json(event_id="e1", score=0.1, decision=False, model_version="fraud/1", path="primary"),
        _json(event_id="e9", score=0.5, decision=True, model_version="fraud/1", path="primary"),
        _json(event_id="e1", score=0.9, decision=True, model_version="fraud/2", path="primary"),
        b"[]",
    ]
    recorded = joins.read_predictions(values, {"e1", "e2"})
    assert recorded.by_event == {
        "e1": {"score": 0.9, "decision": True, "version": "fraud/2", "path": "primary"}
    }
    assert (recorded.records, recorded.duplicates, recorded.malformed) == (2, 1, 1)


def test_the_frame_has_one_row_per_event_in_the_report_layout() -> None:
    features = pd.DataFrame(
        {"event_id": ["e1", "e2"], "card_id": ["c1", "c2"], "ts": [10, 20], "amount": [1.0, 2.0]}
    )
    frame = joins.build_frame(
        features, id_column="event_id", entity_column="card_id", time_column="ts",
        labels={"e2": 1.0},
        recorded={"e1": {"score": 0.3, "decision": False, "version": "fraud/1", "path": "x"}},
        models=[joins.ModelScores("better", [0.2, 0.8], [False, True], ["primary", "default"])],
    )  # fmt: skip
    assert list(frame.columns) == [
        "event_id", "entity", "ts", "label", "score:better", "decision:better", "path:better",
        "recorded_score", "recorded_decision", "recorded_version",
    ]  # fmt: skip
    assert frame["ts"].dtype == np.int64
    assert math.isnan(frame["label"][0]) and frame["label"][1] == 1.0
    assert frame["decision:better"].tolist() == [False, True]
    assert frame["recorded_score"][0] == 0.3 and math.isnan(frame["recorded_score"][1])
    assert frame["recorded_decision"].tolist() == [False, None]
    assert frame["recorded_version"].tolist() == ["fraud/1", None]
    with pytest.raises(ValueError, match="1 scores for 2 events"):
        joins.build_frame(
            features, id_column="event_id", entity_column="card_id", time_column="ts", labels={},
            recorded={}, models=[joins.ModelScores("m", [0.1], [False], ["primary"])],
        )  # fmt: skip


# -- parity ---------------------------------------------------------------------------------------


def _recomputed() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_id": ["e1", "e2", "e3"],
            "tx_count_1h": pd.array([1, 2, 3], dtype="int64"),
            "amount_sum_5m": [10.0, 20.5, 30.25],
            "amount_avg_24h": [10.0, 10.25, 1.0 / 3.0],
            "country_new_24h": pd.array([True, None, False], dtype="boolean"),
        }
    )


COLUMNS = ["tx_count_1h", "amount_sum_5m", "amount_avg_24h", "country_new_24h"]


def test_tolerances_exact_for_counts_sums_flags_relative_for_quotients() -> None:
    frame = _recomputed()
    assert parity.tolerance_for("tx_count_1h", frame["tx_count_1h"].dtype) is None
    assert parity.tolerance_for("amount_sum_5m", frame["amount_sum_5m"].dtype) is None
    assert parity.tolerance_for("country_new_24h", frame["country_new_24h"].dtype) is None
    for name in ("amount_avg_24h", "amount_std_24h", "amount_vs_avg_24h", "cart_ratio_30m"):
        assert parity.tolerance_for(name, np.dtype("float64")) == 1e-9


def test_parity_matches_within_tolerance_and_reports_mismatches() -> None:
    published = {
        "e1": {"event_id": "e1", "tx_count_1h": 1, "amount_sum_5m": 10.0, "amount_avg_24h": 10.0,
               "country_new_24h": True},
        # an average off in the 12th digit: within tolerance; a sum off by 1e-12: not
        "e2": {"event_id": "e2", "tx_count_1h": 2, "amount_sum_5m": 20.5 + 1e-12,
               "amount_avg_24h": 10.25 * (1 + 1e-12), "country_new_24h": None},
    }  # fmt: skip
    result = parity.compare(_recomputed(), published, id_column="event_id", columns=COLUMNS)
    assert result["status"] == "mismatch"
    assert (result["checked"], result["matching"], result["mismatched_events"]) == (2, 1, 1)
    assert result["mismatches_by_column"] == {"amount_sum_5m": 1}
    assert result["examples"] == [
        {"event_id": "e2", "column": "amount_sum_5m", "recomputed": 20.5,
         "published": 20.5 + 1e-12, "tolerance": "exact"},
    ]  # fmt: skip
    assert (result["missing_on_topic"], result["missing_examples"]) == (1, ["e3"])
    assert result["tolerances"]["amount_avg_24h"] == "relative 1e-09"


def test_parity_flags_a_count_an_absent_column_and_a_null_against_a_value() -> None:
    published = {
        "e1": {"tx_count_1h": 2, "amount_sum_5m": 10.0, "amount_avg_24h": 10.0},  # flag absent
        "e2": {"tx_count_1h": 2, "amount_sum_5m": 20.5, "amount_avg_24h": 10.25,
               "country_new_24h": False},  # NULL recomputed, False published
        "e3": {"tx_count_1h": 3, "amount_sum_5m": 30.25, "amount_avg_24h": 1.0 / 3.0,
               "country_new_24h": False},
    }  # fmt: skip
    result = parity.compare(
        _recomputed(), published, id_column="event_id", columns=COLUMNS, max_examples=1
    )
    assert result["mismatches_by_column"] == {"country_new_24h": 2, "tx_count_1h": 1}
    assert result["mismatched_events"] == 2 and result["missing_on_topic"] == 0
    assert len(result["examples"]) == 1 and result["examples"][0]["published"] == 2


def test_parity_is_skipped_with_a_note_when_the_topic_has_none_of_the_events() -> None:
    result = parity.compare(_recomputed(), {}, id_column="event_id", columns=COLUMNS)
    assert result["status"] == "skipped" and "none of the range's events" in result["note"]
    found, duplicates = parity.read_published(
        [_json(event_id="e1", n=1), _json(event_id="x"), _json(event_id="e1", n=2), b"??"],
        {"e1"}, "event_id",
    )  # fmt: skip
    assert found == {"e1": {"event_id": "e1", "n": 2}} and duplicates == 1


# -- progress -------------------------------------------------------------------------------------


def test_progress_line_says_done_rate_and_eta() -> None:
    assert render("scoring", 1200, 5000, 2.0) == (
        "scoring: 1,200/5,000 events (24%)  600 events/s  ETA 6 s  elapsed 2 s"
    )
    assert render("features", 0, 8000, 65, "records") == "features: 8,000 records ... 1 min 05 s"
    assert format_duration(3725) == "1 h 02 min"


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_off_a_terminal_prints_a_line_every_interval() -> None:
    stream, clock = io.StringIO(), _Clock()
    progress = Progress("scoring", 100, stream=stream, interval_s=5, clock=clock)
    for done in range(0, 101, 10):
        clock.now += 1.0
        progress.update(done)
    progress.finish()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 4  # t=1 (first), t=6, t=11, and the final line
    assert lines[-1].startswith("scoring: 100/100 events (100%)")


def test_progress_on_a_terminal_rewrites_one_line() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream, clock = Tty(), _Clock()
    progress = Progress("scoring", 10, stream=stream, clock=clock)
    for done in (1, 5, 10):
        clock.now += 1.0
        progress.update(done)
    progress.finish()
    text = stream.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n") and text.count("\n") == 1


# -- model folders --------------------------------------------------------------------------------


def _model_folder(folder: Path, features: list[str], *, threshold: float | None = 0.4) -> Path:
    folder.mkdir(parents=True)
    x = np.random.default_rng(0).normal(size=(60, len(features)))
    y = (x.sum(axis=1) > 0).astype(int)
    joblib.dump(LogisticRegression().fit(x, y), folder / "model.joblib")
    meta = {"name": "fraud", "version": "0", "feature_names": features}
    if threshold is not None:
        meta["threshold"] = threshold
    (folder / "metadata.json").write_text(json.dumps(meta))
    return folder


def test_a_training_output_gives_primary_and_fallback(tmp_path: Path) -> None:
    _model_folder(tmp_path / "better" / "primary", ["a", "b", "c"])
    _model_folder(tmp_path / "better" / "fallback", ["a"], threshold=0.7)
    model = load_folder(tmp_path / "better", "candidate", "better")
    assert model.primary == tmp_path / "better" / "primary"
    assert model.fallback == tmp_path / "better" / "fallback"
    assert (model.feature_names, model.threshold, model.version) == (
        ("a", "b", "c"),
        0.4,
        "fraud/0",
    )
    single = load_folder(tmp_path / "better" / "primary", "production", "production")
    assert single.fallback is None


def test_bad_model_folders_are_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match="candidate folder .*nope does not exist"):
        load_folder(tmp_path / "nope", "candidate", "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFolderError, match="has no model: expected primary/metadata.json"):
        load_folder(tmp_path / "empty", "candidate", "empty")
    (tmp_path / "nometa" / "primary").mkdir(parents=True)
    with pytest.raises(ModelFolderError, match="primary: no metadata.json"):
        load_folder(tmp_path / "nometa", "candidate", "nometa")
    folder = _model_folder(tmp_path / "badmeta", ["a"])
    (folder / "metadata.json").write_text('{"feature_names": []}')
    with pytest.raises(ModelFolderError, match="feature_names must be a non-empty list"):
        load_folder(folder, "candidate", "badmeta")
    _model_folder(tmp_path / "odd" / "primary", ["a"])
    _model_folder(tmp_path / "odd" / "fallback", ["a", "z"])
    with pytest.raises(ModelFolderError, match=r"fallback model .* reads \['z'\]"):
        load_folder(tmp_path / "odd", "candidate", "odd")


def test_features_the_feature_set_lacks_are_named(tmp_path: Path) -> None:
    model = load_folder(_model_folder(tmp_path / "m", ["amount", "ghost"]), "candidate", "m")
    with pytest.raises(ModelFolderError, match=r"reads features \['ghost'\] that feature set fc"):
        check_features(model, ["event_id", "amount"], "fc")
    check_features(model, ["amount", "ghost"], "fc")


def test_candidate_names_are_their_folders_made_unique() -> None:
    paths = [Path("/m/better"), Path("/n/better"), Path("/x/production")]
    assert unique_names(paths, taken=("production",)) == ["better", "better-2", "production-2"]


# -- scoring through the live job's Scorer --------------------------------------------------------


def test_routes() -> None:
    assert route("/v2/models/m/versions/3/infer") == ("m", "3", "infer")
    assert route("/v2/models/m/infer") == ("m", None, "infer")
    assert route("/v2/health/ready") == ("", None, "")


def test_a_candidate_scores_like_its_estimator_through_the_scorer(tmp_path: Path) -> None:
    from rtml.scoring import DefaultRule, Scorer

    model = load_folder(_model_folder(tmp_path / "c", ["a", "b"]), "candidate", "c")
    estimator = joblib.load(model.primary / "model.joblib")
    rows = pd.DataFrame({"a": [0.5, -1.0, np.nan, 2.0], "b": [0.1, 0.2, 0.3, -3.0]})
    with LocalV2Server({"c": ServedModel("c", "0", estimator, 2)}) as server:
        settings = scoring_settings(BacktestSettings(), model, server.url, no_timeouts=True)
        assert settings.deadline_ms == settings.request_timeout_ms == NO_TIMEOUT_MS
        assert settings.threshold == 0.4  # the candidate's own threshold
        with Scorer(settings, None, DefaultRule()) as scorer:
            predictions = scorer.score(rows)
    complete = rows.dropna().to_numpy()
    want = estimator.predict_proba(complete)[:, 1]
    got = [p.score for p in predictions if p.path == "primary"]
    assert np.allclose(got, want, rtol=1e-12)
    assert [str(p.path) for p in predictions] == ["primary", "primary", "default", "primary"]
    assert predictions[0].model_version == "c/0"
    assert [p.decision for p in predictions] == [p.score >= 0.4 for p in predictions]


def test_production_threshold_follows_the_live_job(tmp_path: Path) -> None:
    model = load_folder(_model_folder(tmp_path / "p", ["a"], threshold=None), "production", "p")
    assert (
        scoring_settings(BacktestSettings(), model, "http://x", no_timeouts=False).threshold == 0.5
    )
    explicit = BacktestSettings(scoring_threshold=0.8)
    assert scoring_settings(explicit, model, "http://x", no_timeouts=False).threshold == 0.8
    live = scoring_settings(BacktestSettings(), model, "http://x", no_timeouts=False)
    assert (live.request_timeout_ms, live.deadline_ms) == (100.0, 250.0)
