"""The scoring UDF without Flink: result columns, metric mirroring, worker settings, and the
UDF itself (open/eval/close with a stand-in metric group) against a stub V2 server."""

from __future__ import annotations

import gc
import pickle
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from rtml import model_repo
from rtml.scoring import Prediction, ScorePath, ScorerMetrics, ScoringSettings
from rtml.scoring.model_versions import CurrentVersions, Promotion, encode_promotion
from rtml.testing.v2_stub_server import StubV2Server, stub_scores
from udfs.scoring import (
    COUNTERS,
    RESULT_FIELDS,
    ScoreFeatures,
    VersionChoice,
    choose_version,
    counter_increments,
    percentile_ms,
    prediction_columns,
    python_worker_config,
)

FEATURES = ("f0", "f1", "f2")


def test_prediction_columns_are_the_result_row_fields_in_order() -> None:
    predictions = [
        Prediction(0.9, True, ScorePath.PRIMARY, "fraud/2", 12.5),
        Prediction(0.1, False, ScorePath.DEFAULT, "rule/1", 250.0, "primary: breaker open"),
    ]
    frame = prediction_columns(predictions, scored_ms=1_763_700_000_123)
    assert list(frame.columns) == [name for name, _ in RESULT_FIELDS]
    assert frame.to_dict("records") == [
        {"score": 0.9, "decision": True, "path": "primary", "model_version": "fraud/2",
         "latency_ms": 12.5, "error": None, "scored_ms": 1_763_700_000_123},
        {"score": 0.1, "decision": False, "path": "default", "model_version": "rule/1",
         "latency_ms": 250.0, "error": "primary: breaker open", "scored_ms": 1_763_700_000_123},
    ]  # fmt: skip
    assert frame["path"].map(type).eq(str).all()  # the enum's text, not the enum
    assert prediction_columns([], 0).empty


def test_counter_increments_are_the_growth_of_running_totals_only() -> None:
    before = ScorerMetrics(rows=10, requests=2, primary=10, breaker_state=0)
    after = ScorerMetrics(rows=25, requests=5, timeouts=1, primary=20, default=5, breaker_state=2)
    assert counter_increments(before, after) == {
        "rows": 15, "requests": 3, "timeouts": 1, "primary": 10, "default": 5,
    }  # fmt: skip
    assert "breaker_state" not in COUNTERS  # a level, mirrored by a gauge
    assert counter_increments(after, after) == {}


def test_percentiles_in_whole_ms() -> None:
    assert percentile_ms([], 99) == 0
    samples = [float(i) for i in range(1, 101)]
    assert percentile_ms(samples, 50) == 50
    assert percentile_ms(samples, 99) == 99


@pytest.mark.parametrize(
    ("promotion", "follow_threshold", "expected"),
    [
        (None, True, VersionChoice("2", 0.4)),  # the configured version, the job's threshold
        (Promotion(""), True, VersionChoice("2", 0.4)),
        (Promotion("3"), True, VersionChoice("3", 0.4)),  # no threshold in the promotion
        (Promotion("3", FEATURES, 0.9), True, VersionChoice("3", 0.9)),
        (Promotion("3", FEATURES, 0.9), False, VersionChoice("3", 0.4)),  # pinned by the job
    ],
)
def test_the_promoted_version_wins_and_brings_its_threshold_unless_the_job_pinned_one(
    promotion: Promotion | None, follow_threshold: bool, expected: VersionChoice
) -> None:
    settings = ScoringSettings("m", FEATURES, model_version="2", threshold=0.4)
    assert choose_version(promotion, settings, follow_threshold=follow_threshold) == expected


def test_without_a_configured_version_the_server_picks_its_latest() -> None:
    settings = ScoringSettings("m", FEATURES)
    assert choose_version(None, settings, follow_threshold=True) == VersionChoice(None, 0.5)


@pytest.mark.parametrize(
    ("names", "reason"),
    [
        (("f0", "f1"), r"it lacks \['f2'\], has \[\] besides"),
        (("f0", "f1", "f2", "f3"), r"it lacks \[\], has \['f3'\] besides"),
        (("f2", "f1", "f0"), "the same columns in another order"),
    ],
)
def test_a_promotion_that_takes_other_features_is_refused_with_the_difference(
    names: tuple[str, ...], reason: str
) -> None:
    settings = ScoringSettings("m", FEATURES, model_version="2")
    choice = choose_version(Promotion("3", names, 0.9), settings, follow_threshold=True)
    assert (choice.version, choice.threshold) == ("2", 0.5)  # what the job had
    assert choice.refusal is not None
    assert "model m version 3 takes other features than this job sends" in choice.refusal
    assert re.search(reason, choice.refusal), choice.refusal


def test_one_arrow_batch_per_bundle_with_the_linger_as_bundle_time() -> None:
    assert python_worker_config(500, 20) == {
        "python.fn-execution.arrow.batch.size": "500",
        "python.fn-execution.bundle.size": "500",
        "python.fn-execution.bundle.time": "20",
    }
    with pytest.raises(ValueError, match="at least 1"):
        python_worker_config(0, 20)


# -- the UDF itself, as a Python worker runs it -------------------------------------------------


class _Metric:
    def __init__(self) -> None:
        self.count = 0
        self.values: list[int] = []

    def inc(self, n: int = 1) -> None:
        self.count += n

    def update(self, value: int) -> None:
        self.values.append(value)


class _Group:
    """Stands in for PyFlink's metric group: records what the UDF registers and reports."""

    def __init__(self) -> None:
        self.metrics: dict[str, _Metric] = {}
        self.gauges: dict[str, Callable[[], int]] = {}

    def add_group(self, name: str, extra: str | None = None) -> _Group:
        assert name == "rtml_scoring"
        return self

    def counter(self, name: str) -> _Metric:
        return self.metrics.setdefault(name, _Metric())

    distribution = counter

    def gauge(self, name: str, obj: Callable[[], int]) -> None:
        self.gauges[name] = obj


class _Context:
    def __init__(self) -> None:
        self.group = _Group()

    def get_metric_group(self) -> _Group:
        return self.group


@pytest.fixture(scope="module")
def stub() -> Iterator[StubV2Server]:
    with StubV2Server(model="m", version="1") as server:
        yield server


@pytest.fixture(scope="module")
def fallback_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 3))
    model = LogisticRegression().fit(x, x @ [1.0, -1.0, 0.5] > 0)
    return model_repo.publish_sklearn_model(
        model, tmp_path_factory.mktemp("models"), "m-fallback", "4", feature_names=list(FEATURES)
    )


def _columns(n: int) -> tuple[np.ndarray, list[pd.Series]]:
    rows = np.random.default_rng(3).normal(size=(n, len(FEATURES)))
    # as Arrow hands them over: one Series per argument, with a non-zero-based index
    return rows, [pd.Series(rows[:, j], index=range(5, 5 + n)) for j in range(len(FEATURES))]


def test_the_udf_scores_a_batch_and_mirrors_the_scorer_metrics(
    stub: StubV2Server, fallback_dir: Path
) -> None:
    stub.reset()
    settings = ScoringSettings("m", FEATURES, base_url=stub.url, sub_batch_size=40)
    function = ScoreFeatures(settings, fallback_dir)
    function = pickle.loads(cloudpickle.dumps(function))  # as Flink ships it to the worker
    context = _Context()
    function.open(context)  # type: ignore[arg-type]
    try:
        rows, columns = _columns(100)
        result = function.eval(*columns)
        assert list(result.columns) == [name for name, _ in RESULT_FIELDS]
        np.testing.assert_allclose(result["score"], stub_scores(rows.tolist()), rtol=1e-12)
        assert set(result["path"]) == {"primary"}
        assert set(result["model_version"]) == {"m/1"}
        metrics = context.group.metrics
        assert metrics["rows"].count == 100 and metrics["primary"].count == 100
        assert metrics["requests"].count == 3  # 40 + 40 + 20 rows
        assert sorted(metrics["request_rows"].values) == [20, 40, 40]
        assert metrics["batch_rows"].values == [100]
        assert len(metrics["request_latency_ms"].values) == 3
        assert context.group.gauges["breaker_state"]() == 0
        assert context.group.gauges["request_latency_p99_ms"]() >= 0

        stub.set_behaviour(mode="error", status=503)
        result = function.eval(*_columns(10)[1])
        assert set(result["path"]) == {"fallback_model"}
        assert set(result["model_version"]) == {"m-fallback/4"}
        assert all("HTTP 503" in error for error in result["error"])
        assert metrics["fallback_model"].count == 10
        assert metrics["request_failures"].count >= 1
    finally:
        function.close()
        stub.reset()


def test_open_freezes_the_workers_heap_with_the_scorer_in_it(stub: StubV2Server) -> None:
    function = ScoreFeatures(ScoringSettings("m", FEATURES, base_url=stub.url, retries=0))
    function.open(_Context())  # type: ignore[arg-type]
    try:
        assert not any(o is function._scorer for o in gc.get_objects())  # see udfs.worker
    finally:
        function.close()


def test_a_promoted_version_takes_over_at_the_next_batch(stub: StubV2Server) -> None:
    stub.reset()
    settings = ScoringSettings("m", FEATURES, base_url=stub.url, retries=0)
    function = ScoreFeatures(settings)
    function.open(_Context())  # type: ignore[arg-type]
    versions = CurrentVersions()
    function._follower = SimpleNamespace(versions=versions, stop=lambda: None)  # type: ignore[assignment]
    try:
        assert set(function.eval(*_columns(5)[1])["model_version"]) == {"m/1"}
        versions.apply(b"m", b'{"version": "2"}')  # the stub has no version 2: it answers 404
        result = function.eval(*_columns(5)[1])
        assert set(result["path"]) == {"default"}
        assert all("HTTP 404" in error for error in result["error"])
        versions.apply(b"other", b'{"version": "9"}')  # another model's promotion changes nothing
        versions.apply(b"m", None)  # withdrawn: back to the configured version (the latest)
        assert set(function.eval(*_columns(5)[1])["path"]) == {"primary"}
    finally:
        function.close()


def test_a_promotion_decides_with_its_threshold_and_one_with_other_features_is_refused(
    stub: StubV2Server,
) -> None:
    stub.reset()
    settings = ScoringSettings("m", FEATURES, base_url=stub.url, retries=0, threshold=0.5)
    function = ScoreFeatures(settings)
    context = _Context()
    function.open(context)  # type: ignore[arg-type]
    versions = CurrentVersions()
    function._follower = SimpleNamespace(versions=versions, stop=lambda: None)  # type: ignore[assignment]

    def promote(names: tuple[str, ...], threshold: float) -> pd.DataFrame:
        versions.apply(*encode_promotion("m", "1", names, threshold))
        return function.eval(*_columns(20)[1])

    try:
        everything = promote(FEATURES, 0.0)
        assert set(everything["path"]) == {"primary"}
        assert everything["decision"].all()  # every score >= 0
        nothing = promote(FEATURES, 1.0)
        assert (nothing["score"] < 1.0).all() and not nothing["decision"].any()
        refused = promote(("f0", "f1"), 0.0)  # would flag everything again: not followed
        assert set(refused["path"]) == {"primary"}
        assert not refused["decision"].any()  # still version 1 at threshold 1.0
        function.eval(*_columns(5)[1])  # the same refused promotion: refused once, not per batch
        assert context.group.metrics["promotions_refused"].count == 1
    finally:
        function.close()


def test_a_job_with_an_explicit_threshold_keeps_it_across_promotions(stub: StubV2Server) -> None:
    stub.reset()
    settings = ScoringSettings("m", FEATURES, base_url=stub.url, retries=0, threshold=0.0)
    function = ScoreFeatures(settings, follow_threshold=False)
    function.open(_Context())  # type: ignore[arg-type]
    versions = CurrentVersions()
    function._follower = SimpleNamespace(versions=versions, stop=lambda: None)  # type: ignore[assignment]
    try:
        versions.apply(*encode_promotion("m", "1", FEATURES, 1.0))
        assert function.eval(*_columns(20)[1])["decision"].all()  # the job's 0.0, not 1.0
    finally:
        function.close()
