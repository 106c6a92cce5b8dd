"""Scorer against a real (stub) V2 server over loopback: the chain picks the right path."""

from __future__ import annotations

import gc
import multiprocessing
import pickle
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from rtml import model_repo
from rtml.scoring import BreakerState, DefaultRule, ScorePath, Scorer, ScoringSettings
from rtml.testing.v2_stub_server import StubV2Server, stub_scores

FEATURES = ("f0", "f1", "f2")
DEADLINE_MS = 250.0
TIGHT = {"request_timeout_ms": 100.0, "deadline_ms": DEADLINE_MS}
SLACK_S = 0.15  # fallbacks and thread hand-offs on a busy 2-core machine (load 10+)


@pytest.fixture(scope="module")
def stub() -> Iterator[StubV2Server]:
    with StubV2Server(model="smoke", version="1") as server:
        yield server


@pytest.fixture(autouse=True)
def healthy(stub: StubV2Server) -> None:
    stub.reset()


@pytest.fixture(scope="module")
def fallback_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 3))
    model = LogisticRegression().fit(x, x @ [1.0, -1.0, 0.5] > 0)
    return model_repo.publish_sklearn_model(
        model,
        tmp_path_factory.mktemp("models"),
        "smoke-fallback",
        "2",
        feature_names=list(FEATURES),
    )


def _settings(stub: StubV2Server, **changes: object) -> ScoringSettings:
    values: dict = {
        "model_name": "smoke", "feature_names": FEATURES, "base_url": stub.url,
        # generous by default, so a load spike on a shared machine does not become a retry;
        # the deadline tests set TIGHT
        "request_timeout_ms": 1000.0, "deadline_ms": 3000.0, "retries": 2,
        "backoff_base_ms": 2.0, "backoff_max_ms": 10.0, "breaker_failure_threshold": 1000,
        "sub_batch_size": 64,
    }  # fmt: skip
    values.update(changes)
    return ScoringSettings(**values)


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, len(FEATURES)))


def _eventually(holds: Callable[[], bool], within_s: float = 5.0) -> bool:
    """Whether `holds()` becomes true within `within_s` (a probe answers in the background)."""
    until = time.monotonic() + within_s
    while not holds() and time.monotonic() < until:
        time.sleep(0.005)
    return holds()


def _timed(scorer: Scorer, rows: object) -> tuple[list, float]:
    started = time.monotonic()
    predictions = scorer.score(rows)
    return predictions, time.monotonic() - started


def test_healthy_server_scores_every_row_like_the_model(stub: StubV2Server) -> None:
    rows = _rows(150)
    with Scorer(_settings(stub, threshold=0.6)) as scorer:
        predictions = scorer.score(rows)
    expected = stub_scores(rows.tolist())
    assert [p.score for p in predictions] == pytest.approx(expected, abs=1e-12)
    assert {p.path for p in predictions} == {ScorePath.PRIMARY}
    assert {p.model_version for p in predictions} == {"smoke/1"}
    assert [p.decision for p in predictions] == [s >= 0.6 for s in expected]
    assert all(p.error is None and 0 < p.latency_ms < DEADLINE_MS for p in predictions)


def test_rows_are_split_into_sub_batches_sent_within_max_in_flight(stub: StubV2Server) -> None:
    stub.set_behaviour(mode="sleep", sleep_ms=30)
    settings = _settings(  # generous times: a load spike must not turn into a retry here
        stub, sub_batch_size=100, max_in_flight=3, request_timeout_ms=2000, deadline_ms=5000
    )
    with Scorer(settings) as scorer:
        predictions = scorer.score(_rows(1000))
        latencies, sizes = scorer.drain_samples()
        metrics = scorer.metrics()
    assert {p.path for p in predictions} == {ScorePath.PRIMARY}
    stats = stub.stats()
    assert stats["infer_requests"] == 10 and stats["rows"] == 1000
    assert stats["max_in_flight"] == 3  # concurrent, and never more than allowed
    assert stats["connections"] == 3  # kept alive and reused
    assert sorted(sizes) == [100] * 10 and len(latencies) == 10
    assert min(latencies) >= 30
    assert (metrics.requests, metrics.rows, metrics.primary) == (10, 1000, 1000)


def test_stalled_server_never_holds_score_past_the_deadline(
    stub: StubV2Server, fallback_dir: Path
) -> None:
    stub.set_behaviour(mode="sleep", sleep_ms=5000)
    rows = _rows(300)
    settings = _settings(stub, sub_batch_size=100, **TIGHT)  # 3 sub-batches, all in flight
    with Scorer(settings, fallback_model=fallback_dir) as scorer:
        predictions, elapsed = _timed(scorer, rows)
        metrics = scorer.metrics()
    assert elapsed < DEADLINE_MS / 1000 + SLACK_S
    assert {p.path for p in predictions} == {ScorePath.FALLBACK_MODEL}
    assert {p.model_version for p in predictions} == {"smoke-fallback/2"}
    # 100 ms, 100 ms, then what is left of the 250 ms
    assert {p.error for p in predictions} <= {
        f"primary: timeout after {ms} ms, cut by the deadline (3 attempts)" for ms in range(60)
    }
    assert metrics.timeouts == 9 and metrics.retries == 6 and metrics.fallback_model == 300


def test_max_in_flight_queue_is_bounded_by_the_deadline_too(stub: StubV2Server) -> None:
    stub.set_behaviour(mode="sleep", sleep_ms=90)
    settings = _settings(stub, max_in_flight=1, sub_batch_size=10, retries=0, **TIGHT)
    with Scorer(settings) as scorer:
        predictions, elapsed = _timed(scorer, _rows(100))
        metrics = scorer.metrics()
    assert elapsed < DEADLINE_MS / 1000 + SLACK_S
    primary = [p for p in predictions if p.path is ScorePath.PRIMARY]
    assert 10 <= len(primary) <= 30  # 1 to 3 sub-batches made it, one at a time
    waiting = [p for p in predictions if p.error and "waiting for a connection" in p.error]
    assert waiting and metrics.deadline_exceeded == len(waiting) // 10


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_status_is_retried_and_then_succeeds(stub: StubV2Server, status: int) -> None:
    stub.set_behaviour(mode="error", status=status, times=2)
    with Scorer(_settings(stub, sub_batch_size=1000)) as scorer:
        predictions = scorer.score(_rows(20))
        metrics = scorer.metrics()
    assert {p.path for p in predictions} == {ScorePath.PRIMARY}
    assert stub.stats()["infer_requests"] == 3
    assert (metrics.retries, metrics.request_failures) == (2, 2)


def test_retryable_status_falls_back_after_the_last_retry(
    stub: StubV2Server, fallback_dir: Path
) -> None:
    stub.set_behaviour(mode="error", status=503)
    with Scorer(_settings(stub, sub_batch_size=1000), fallback_model=fallback_dir) as scorer:
        predictions = scorer.score(_rows(20))
    assert stub.stats()["infer_requests"] == 3
    assert {p.path for p in predictions} == {ScorePath.FALLBACK_MODEL}
    assert predictions[0].error == "primary: HTTP 503: stub told to answer 503 (3 attempts)"


@pytest.mark.parametrize("status", [400, 404, 422, 500])
def test_non_retryable_status_is_not_retried(stub: StubV2Server, status: int) -> None:
    stub.set_behaviour(mode="error", status=status)
    with Scorer(_settings(stub, sub_batch_size=1000)) as scorer:
        predictions = scorer.score(_rows(5))
    assert stub.stats()["infer_requests"] == 1
    assert {p.path for p in predictions} == {ScorePath.DEFAULT}
    assert predictions[0].error.startswith(f"primary: HTTP {status}: stub told to answer")
    assert predictions[0].error.endswith("; fallback_model: none configured")


@pytest.mark.parametrize(
    "schema, message",
    [
        ("wrong_rows", "19 scores for 20 rows"),
        ("no_outputs", "no outputs"),
        ("wrong_output", "output 'predict_proba' not in ['predict']"),
        ("not_json", "not JSON"),
        ("nan", "non-finite scores"),
    ],
)
def test_wrong_schema_is_recorded_not_retried_and_falls_back(
    stub: StubV2Server, fallback_dir: Path, schema: str, message: str
) -> None:
    stub.set_behaviour(mode="wrong_schema", schema=schema)
    with Scorer(_settings(stub, sub_batch_size=1000), fallback_model=fallback_dir) as scorer:
        predictions = scorer.score(_rows(20))
    assert stub.stats()["infer_requests"] == 1
    assert {p.path for p in predictions} == {ScorePath.FALLBACK_MODEL}
    assert predictions[0].error.startswith("primary: schema: ")
    assert message in predictions[0].error


def test_dropped_connection_is_retried(stub: StubV2Server) -> None:
    stub.set_behaviour(mode="drop", times=1)
    with Scorer(_settings(stub, sub_batch_size=1000)) as scorer:
        assert {p.path for p in scorer.score(_rows(10))} == {ScorePath.PRIMARY}
        stub.set_behaviour(mode="drop")
        predictions = scorer.score(_rows(10))
    assert {p.path for p in predictions} == {ScorePath.DEFAULT}
    assert predictions[0].error.startswith("primary: connect: connection closed before an answer")


def test_killed_server_falls_back_fast_and_recovery_is_picked_up(fallback_dir: Path) -> None:
    server = StubV2Server().start()
    port = server.port
    settings = _settings(server, breaker_failure_threshold=3, breaker_cooldown_ms=150)
    with Scorer(settings, fallback_model=fallback_dir) as scorer:
        assert {p.path for p in scorer.score(_rows(10))} == {ScorePath.PRIMARY}
        server.stop()
        predictions, elapsed = _timed(scorer, _rows(10))
        assert {p.path for p in predictions} == {ScorePath.FALLBACK_MODEL}
        assert "connect" in predictions[0].error and elapsed < 0.2  # refused: no waiting
        assert scorer.breaker_state is BreakerState.OPEN  # 3 refused attempts in a row
        predictions = scorer.score(_rows(10))
        assert predictions[0].error.startswith("primary: breaker open")
        restarted = StubV2Server(port=port).start()  # back on the same address
        try:
            time.sleep(0.2)  # the cool-down
            probing = scorer.score(_rows(10))  # falls back while its rows probe the server
            assert {p.path for p in probing} == {ScorePath.FALLBACK_MODEL}
            assert probing[0].error.startswith("primary: breaker half-open: this batch probes")
            assert _eventually(lambda: scorer.breaker_state is BreakerState.CLOSED)
            assert {p.path for p in scorer.score(_rows(10))} == {ScorePath.PRIMARY}
            assert scorer.metrics().breaker_opened == 1
            assert scorer.metrics().breaker_probes == 1
        finally:
            restarted.stop()


def test_breaker_opens_stops_calling_then_probes_and_closes(stub: StubV2Server) -> None:
    settings = _settings(stub, breaker_failure_threshold=2, breaker_cooldown_ms=200, retries=0)
    stub.set_behaviour(mode="error", status=500)
    with Scorer(settings) as scorer:
        scorer.score(_rows(64 * 2))  # two sub-batches, both fail: opens
        assert scorer.metrics().breaker_state == BreakerState.OPEN
        before = stub.stats()["infer_requests"]
        predictions = scorer.score(_rows(64 * 3))
        assert stub.stats()["infer_requests"] == before  # not called at all while open
        assert {p.error for p in predictions} == {
            "primary: breaker open; fallback_model: none configured"
        }
        assert scorer.metrics().breaker_rejections == 3
        time.sleep(0.21)
        assert scorer.breaker_state is BreakerState.HALF_OPEN
        scorer.score(_rows(64))  # the probe fails: open again
        # (opened, not the state: open lasts only the 200 ms cool-down, a poll could miss it)
        assert _eventually(lambda: scorer.metrics().breaker_opened == 2)
        assert stub.stats()["infer_requests"] == before + 1
        stub.set_behaviour()
        time.sleep(0.21)
        predictions = scorer.score(_rows(64 * 3))
        # one sub-batch probes half-open, in the background; all three fall back meanwhile
        assert [p.error for p in predictions[::64]] == [
            "primary: breaker half-open: this batch probes the server in the background; "
            "fallback_model: none configured",
            "primary: breaker open; fallback_model: none configured",
            "primary: breaker open; fallback_model: none configured",
        ]
        assert _eventually(lambda: scorer.breaker_state is BreakerState.CLOSED)
        assert {p.path for p in scorer.score(_rows(64 * 3))} == {ScorePath.PRIMARY}
        assert scorer.metrics().breaker_opened == 2
        assert scorer.metrics().breaker_probes == 2


def test_a_retry_that_finds_the_breaker_half_open_probes_and_keeps_the_first_failure(
    stub: StubV2Server,
) -> None:
    # a cool-down shorter than any retry's backoff: the retry finds the breaker half-open
    settings = _settings(
        stub, breaker_failure_threshold=1, breaker_cooldown_ms=0.001, sub_batch_size=1000
    )
    stub.set_behaviour(mode="error", status=503)
    with Scorer(settings) as scorer:
        predictions = scorer.score(_rows(10))
        assert _eventually(lambda: stub.stats()["infer_requests"] == 2)  # the first, the probe
    assert predictions[0].error == (
        "primary: HTTP 503: stub told to answer 503 (2 attempts); breaker half-open: this batch "
        "probes the server in the background; fallback_model: none configured"
    )


def test_a_probe_of_a_stalled_server_does_not_hold_the_batch(stub: StubV2Server) -> None:
    # The request timeout is far longer than the fallbacks take: a batch that waited for its
    # probe would take it in full.
    settings = _settings(
        stub, breaker_failure_threshold=1, breaker_cooldown_ms=100, retries=0,
        request_timeout_ms=600.0, deadline_ms=900.0,
    )  # fmt: skip
    stub.set_behaviour(mode="sleep", sleep_ms=5000)
    with Scorer(settings) as scorer:
        scorer.score(_rows(10))  # times out after 600 ms: opens
        assert scorer.breaker_state is BreakerState.OPEN
        time.sleep(0.11)
        probing, elapsed = _timed(scorer, _rows(10))
        assert elapsed < 0.6 - SLACK_S, elapsed
        assert probing[0].error.startswith("primary: breaker half-open: this batch probes")
        refused, elapsed = _timed(scorer, _rows(10))  # the probe still out: refused at once
        assert elapsed < 0.6 - SLACK_S, elapsed
        assert refused[0].error.startswith("primary: breaker open")
        assert _eventually(lambda: scorer.metrics().breaker_opened == 2)  # the probe timed out
        assert scorer.metrics().timeouts == 2


def test_rows_with_missing_features_skip_the_server_and_say_why(
    stub: StubV2Server, fallback_dir: Path
) -> None:
    rows = [
        {"f0": 0.5, "f1": -1.0, "f2": 2.0},
        {"f0": 0.5, "f1": None, "f2": 2.0},
        {"f0": float("nan"), "f2": "x"},
    ]
    rule = DefaultRule({"f0": 1.0, "f2": 0.5}, bias=-1.0)
    with Scorer(_settings(stub), fallback_model=fallback_dir, rule=rule) as scorer:
        predictions = scorer.score(rows)
    assert stub.stats()["rows"] == 1  # only the complete row was sent
    assert predictions[0].path is ScorePath.PRIMARY
    assert predictions[1].path is ScorePath.DEFAULT
    assert predictions[1].error == (
        "primary: skipped, missing features ['f1']; fallback_model: missing features, takes no NaN"
    )
    assert predictions[1].score == pytest.approx(1 / (1 + np.exp(-(-1.0 + 0.5 + 1.0))))
    assert predictions[2].error.startswith("primary: skipped, missing features ['f0', 'f1', 'f2']")
    assert predictions[2].model_version == "rule/1"


def test_a_fallback_model_that_takes_nan_scores_incomplete_rows(
    stub: StubV2Server, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 3))
    model = HistGradientBoostingClassifier(max_iter=10).fit(x, x[:, 0] > 0)
    names = ["f0", "f2", "f1"]  # another order than the scorer's: mapped by name
    folder = model_repo.publish_sklearn_model(model, tmp_path, "hgb", "1", feature_names=names)
    rows = [{"f0": 1.0, "f1": None, "f2": 2.0}]
    with Scorer(_settings(stub), fallback_model=folder) as scorer:
        (prediction,) = scorer.score(rows)
    assert prediction.path is ScorePath.FALLBACK_MODEL and prediction.model_version == "hgb/1"
    assert prediction.score == pytest.approx(model.predict_proba([[1.0, 2.0, np.nan]])[0, 1])


def test_fallback_predictions_equal_calling_the_model_directly(
    stub: StubV2Server, fallback_dir: Path
) -> None:
    stub.set_behaviour(mode="error", status=400)
    rows = _rows(200, seed=5)
    with Scorer(_settings(stub), fallback_model=fallback_dir) as scorer:
        predictions = scorer.score(rows)
    import joblib

    model = joblib.load(fallback_dir / model_repo.MODEL_FILENAME)
    expected = model.predict_proba(rows)[:, 1]
    np.testing.assert_array_equal([p.score for p in predictions], expected)
    assert [p.decision for p in predictions] == (expected >= 0.5).tolist()


def test_the_fallback_model_decides_with_its_own_threshold(
    stub: StubV2Server, tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 3))
    model = LogisticRegression().fit(x, x @ [1.0, -1.0, 0.5] > 0)
    folder = model_repo.publish_sklearn_model(
        model, tmp_path, "strict", "1", feature_names=list(FEATURES), threshold=0.9
    )
    rows = _rows(200, seed=5)
    expected = model.predict_proba(rows)[:, 1]
    assert ((expected >= 0.5) != (expected >= 0.9)).any()  # the two thresholds differ here
    stub.set_behaviour(mode="error", status=400)
    with Scorer(_settings(stub, threshold=0.5), fallback_model=folder) as scorer:
        fallen_back = scorer.score(rows)
    assert {p.path for p in fallen_back} == {ScorePath.FALLBACK_MODEL}
    assert [p.decision for p in fallen_back] == (expected >= 0.9).tolist()
    stub.reset()
    with Scorer(_settings(stub, threshold=0.5), fallback_model=folder) as scorer:
        primary = scorer.score(rows)
    assert {p.path for p in primary} == {ScorePath.PRIMARY}
    assert [p.decision for p in primary] == [p.score >= 0.5 for p in primary]  # the primary's


def test_close_closes_every_connection_also_those_in_flight(stub: StubV2Server) -> None:
    stub.set_behaviour(mode="sleep", sleep_ms=30)
    settings = _settings(stub, sub_batch_size=10, max_in_flight=4, deadline_ms=5000)
    # Earlier tests' garbage (in a full run: the integration tests' too) is collected before the
    # watch: what it reports is this scorer's alone.
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        scorer = Scorer(settings)
        scorer.score(_rows(40))  # four connections, kept alive
        scorer.close()
        del scorer
        gc.collect()  # an unclosed socket or transport says so when it is collected
    stub.reset()
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not unclosed, unclosed[:3]


def test_empty_batch() -> None:
    scorer = Scorer(ScoringSettings("m", FEATURES, base_url="http://127.0.0.1:9"))
    assert scorer.score([]) == []
    scorer.close()


def test_pickles_as_configuration_and_scores_after_unpickling(
    stub: StubV2Server, fallback_dir: Path
) -> None:
    scorer = Scorer(_settings(stub), fallback_model=fallback_dir, rule=DefaultRule(bias=-2.0))
    scorer.score(_rows(3))  # a live loop thread and connections must not be pickled
    state = scorer.__getstate__()
    assert set(state) == {"settings", "fallback_model", "rule", "seed"}
    copy = pickle.loads(pickle.dumps(scorer))
    scorer.close()
    try:
        assert copy.rule.bias == -2.0 and copy.fallback is not None
        assert {p.path for p in copy.score(_rows(3))} == {ScorePath.PRIMARY}
    finally:
        copy.close()


def _score_in_child(scorer: Scorer, queue: multiprocessing.Queue) -> None:
    queue.put([p.path.value for p in scorer.score(_rows(4))])


def test_fork_safe(stub: StubV2Server) -> None:
    with Scorer(_settings(stub)) as scorer:
        scorer.score(_rows(4))  # the parent's loop thread exists before the fork
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_score_in_child, args=(scorer, queue))
        child.start()
        paths = queue.get(timeout=10)
        child.join(timeout=10)
        assert paths == ["primary"] * 4 and child.exitcode == 0
        assert {p.path for p in scorer.score(_rows(4))} == {ScorePath.PRIMARY}


def test_closed_scorer_refuses_to_score(stub: StubV2Server) -> None:
    scorer = Scorer(_settings(stub))
    scorer.score(_rows(2))
    scorer.close()
    scorer.close()
    with pytest.raises(RuntimeError, match="closed"):
        scorer.score(_rows(2))
