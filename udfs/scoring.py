"""A vectorized (pandas) UDF that scores feature rows with `rtml.scoring.Scorer`, per Arrow batch.

Flink hands the UDF an Arrow batch (`python.fn-execution.arrow.batch.size` rows, or fewer when
the bundle's linger time ends first); `eval` makes one `Scorer.score` call for it, which sends
sub-batches to the model server concurrently and returns within the deadline, the fallback chain
answering for what the server did not. The job sets one Arrow batch per bundle, so a stalled
server delays a bundle, and a checkpoint barrier behind it, by at most the deadline.

The model version follows the log-compacted versions topic (`rtml.scoring.model_versions`): when
the promoted version changes, the next batch is scored by a scorer for the new version (the old
one is closed), with the version's own threshold unless the job's was set explicitly; a version
whose metadata names other input columns than the job sends is refused (logged, counted in
`promotions_refused`) and the job keeps scoring with what it has. Every prediction records the
version that actually answered.

Metrics (group `rtml_scoring`): counters mirroring `Scorer.metrics()` (rows, requests, request
failures, timeouts, retries, breaker rejections and openings, predictions per path), a
`breaker_state` gauge (0 closed, 1 half-open, 2 open), distributions of rows per batch, rows per
request and request latency, and p50/p99 request latency gauges over the last 1000 requests.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pyflink.table import DataTypes
from pyflink.table.udf import FunctionContext, ScalarFunction, UserDefinedScalarFunctionWrapper, udf

from rtml.scoring import DefaultRule, Prediction, Scorer, ScorerMetrics, ScoringSettings
from rtml.scoring.model_versions import FollowSettings, Promotion, VersionFollower
from udfs.worker import freeze_startup_heap

log = logging.getLogger(__name__)

# The ROW the UDF returns, field by field (name, type), in this order.
RESULT_FIELDS: tuple[tuple[str, object], ...] = (
    ("score", DataTypes.DOUBLE()),
    ("decision", DataTypes.BOOLEAN()),
    ("path", DataTypes.STRING()),
    ("model_version", DataTypes.STRING()),
    ("latency_ms", DataTypes.DOUBLE()),
    ("error", DataTypes.STRING()),
    ("scored_ms", DataTypes.BIGINT()),  # wall clock when the batch was scored (epoch ms)
)
RESULT_TYPE = DataTypes.ROW([DataTypes.FIELD(name, kind) for name, kind in RESULT_FIELDS])

# ScorerMetrics fields that are running totals (breaker_state is a level: a gauge).
COUNTERS = tuple(f.name for f in dataclasses.fields(ScorerMetrics) if f.name != "breaker_state")
_LATENCY_WINDOW = 1000
_READY_TIMEOUT_S = 15.0  # how long open() waits to learn the promoted versions


def prediction_columns(predictions: Sequence[Prediction], scored_ms: int) -> pd.DataFrame:
    """The UDF's result for a batch: one row per prediction, RESULT_FIELDS columns (pure)."""
    return pd.DataFrame(
        {
            "score": np.array([p.score for p in predictions], dtype=np.float64),
            "decision": np.array([p.decision for p in predictions], dtype=bool),
            "path": [str(p.path) for p in predictions],
            "model_version": [p.model_version for p in predictions],
            "latency_ms": np.array([p.latency_ms for p in predictions], dtype=np.float64),
            "error": [p.error for p in predictions],
            "scored_ms": np.full(len(predictions), scored_ms, dtype=np.int64),
        },
        columns=[name for name, _ in RESULT_FIELDS],
    )


def counter_increments(before: ScorerMetrics, after: ScorerMetrics) -> dict[str, int]:
    """How much each running total grew between two snapshots of one scorer (pure)."""
    grown = {name: getattr(after, name) - getattr(before, name) for name in COUNTERS}
    return {name: delta for name, delta in grown.items() if delta > 0}


def percentile_ms(samples: Sequence[float], q: float) -> int:
    """The q-th percentile of the samples, in whole ms (0 without samples; gauges take ints)."""
    if not samples:
        return 0
    return int(round(float(np.percentile(np.asarray(samples), q))))


@dataclass(frozen=True)
class VersionChoice:
    """What to score with: a version (None: the server's latest) and threshold; or, when the
    promotion cannot be followed, why (`refusal`), and the job stays on what it scores with."""

    version: str | None
    threshold: float
    refusal: str | None = None


def choose_version(
    promotion: Promotion | None, settings: ScoringSettings, *, follow_threshold: bool
) -> VersionChoice:
    """The version and threshold for the next batch (pure).

    The promoted version wins over the job's configured one (`settings.model_version`; empty:
    the server's latest). A promotion whose metadata names other input columns than the job's is
    refused: the job would send it the wrong features. Its threshold is taken unless the job's
    (`settings.threshold`) was set explicitly (`follow_threshold` False).
    """
    configured = VersionChoice(settings.model_version or None, settings.threshold)
    if promotion is None or not promotion.version:
        return configured
    if promotion.feature_names is not None and promotion.feature_names != tuple(
        settings.feature_names
    ):
        theirs, ours = set(promotion.feature_names), set(settings.feature_names)
        difference = (
            f"it lacks {sorted(ours - theirs)}, has {sorted(theirs - ours)} besides"
            if theirs != ours
            else "the same columns in another order"
        )
        return dataclasses.replace(
            configured,
            refusal=f"model {settings.model_name} version {promotion.version} takes other "
            f"features than this job sends ({difference}): not switching; restart the job "
            "for a model with other inputs",
        )  # fmt: skip
    threshold = settings.threshold
    if follow_threshold and promotion.threshold is not None:
        threshold = promotion.threshold
    return VersionChoice(promotion.version, threshold)


class ScoreFeatures(ScalarFunction):
    """score(feature_1, ..., feature_n) -> ROW(score, decision, path, model_version, latency_ms,
    error, scored_ms), one per row, the features in `settings.feature_names` order."""

    def __init__(
        self,
        settings: ScoringSettings,
        fallback_model: Path | None = None,
        rule: DefaultRule | None = None,
        follow: FollowSettings | None = None,
        *,
        follow_threshold: bool = True,
    ) -> None:
        self.settings = settings
        self.fallback_model = fallback_model
        self.rule = rule or DefaultRule()
        self.follow = follow
        # A promoted version decides with its own threshold unless the job's was set explicitly.
        self.follow_threshold = follow_threshold
        # Fail at submission, not on the TaskManager: settings, fallback model and rule check here.
        Scorer(settings, fallback_model, self.rule).close()

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self, function_context: FunctionContext) -> None:
        group = function_context.get_metric_group().add_group("rtml_scoring")
        self._counters = {name: group.counter(name) for name in COUNTERS}
        self._batch_rows = group.distribution("batch_rows")
        self._request_rows = group.distribution("request_rows")
        self._request_latency = group.distribution("request_latency_ms")
        self._latencies: collections.deque[float] = collections.deque(maxlen=_LATENCY_WINDOW)
        self._lock = threading.Lock()
        group.gauge("breaker_state", lambda: int(self._scorer.breaker_state))
        group.gauge("request_latency_p50_ms", lambda: self._percentile(50))
        group.gauge("request_latency_p99_ms", lambda: self._percentile(99))
        self._follower: VersionFollower | None = None
        if self.follow is not None:
            self._follower = VersionFollower(self.follow).start()
            if not self._follower.wait_ready(_READY_TIMEOUT_S):
                log.warning(
                    "versions topic %s not read within %.0f s: starting with version %s",
                    self.follow.topic, _READY_TIMEOUT_S, self.settings.model_version or "latest",
                )  # fmt: skip
        self._refused = group.counter("promotions_refused")
        self._promotion: Promotion | None = None
        self._choice = self._choose()
        self._scorer = self._new_scorer(self._choice)
        self._seen = ScorerMetrics()
        freeze_startup_heap()  # last: the model and the scorer are part of what stays

    def close(self) -> None:
        follower = getattr(self, "_follower", None)
        if follower is not None:
            follower.stop()
        self._retire_scorer()

    # -- per batch -------------------------------------------------------------------------------

    def eval(self, *features: pd.Series) -> pd.DataFrame:
        choice = self._choose()
        if choice != self._choice:
            log.info(
                "model %s: switching to version %s (threshold %s)",
                self.settings.model_name, choice.version or "latest", choice.threshold,
            )  # fmt: skip
            self._retire_scorer()
            self._choice, self._scorer = choice, self._new_scorer(choice)
        frame = pd.concat(
            [s.reset_index(drop=True) for s in features], axis=1, keys=self.settings.feature_names
        )
        predictions = self._scorer.score(frame)
        scored_ms = time.time_ns() // 1_000_000
        self._batch_rows.update(len(frame))
        self._mirror_metrics()
        return prediction_columns(predictions, scored_ms)

    # -- helpers ---------------------------------------------------------------------------------

    def _choose(self) -> VersionChoice:
        """What the next batch is scored with; a refused promotion keeps the current choice."""
        promotion = None
        if self._follower is not None:
            promotion = self._follower.versions.promotion(self.settings.model_name)
        current = getattr(self, "_choice", None)
        if current is not None and promotion == self._promotion:
            return current
        self._promotion = promotion
        choice = choose_version(promotion, self.settings, follow_threshold=self.follow_threshold)
        if choice.refusal is None:
            return choice
        log.error("%s", choice.refusal)
        self._refused.inc()
        return current or dataclasses.replace(choice, refusal=None)

    def _new_scorer(self, choice: VersionChoice) -> Scorer:
        settings = dataclasses.replace(
            self.settings, model_version=choice.version, threshold=choice.threshold
        )
        self._seen = ScorerMetrics()
        return Scorer(settings, self.fallback_model, self.rule)

    def _retire_scorer(self) -> None:
        scorer = getattr(self, "_scorer", None)
        if scorer is not None:
            self._mirror_metrics()
            scorer.close()

    def _mirror_metrics(self) -> None:
        now = self._scorer.metrics()
        for name, delta in counter_increments(self._seen, now).items():
            self._counters[name].inc(delta)
        self._seen = now
        latencies, sizes = self._scorer.drain_samples()
        for size in sizes:
            self._request_rows.update(int(size))
        for latency in latencies:
            self._request_latency.update(int(round(latency)))
        with self._lock:
            self._latencies.extend(latencies)

    def _percentile(self, q: float) -> int:
        with self._lock:
            samples = list(self._latencies)
        return percentile_ms(samples, q)


def score_features(
    settings: ScoringSettings,
    fallback_model: Path | None = None,
    rule: DefaultRule | None = None,
    follow: FollowSettings | None = None,
    *,
    follow_threshold: bool = True,
) -> UserDefinedScalarFunctionWrapper:
    """The UDF, ready to register; connections and threads start on the TaskManager."""
    return udf(
        ScoreFeatures(settings, fallback_model, rule, follow, follow_threshold=follow_threshold),
        result_type=RESULT_TYPE,
        func_type="pandas",
    )


def python_worker_config(batch_size: int, linger_ms: int) -> Mapping[str, str]:
    """Flink settings that make each bundle one Arrow batch of at most `batch_size` rows, sent
    after at most `linger_ms` (pure).

    A bundle is finished (and a checkpoint barrier let through) only once every batch in it is
    scored; with one batch per bundle, a stalled server delays it by one deadline, not one per
    batch.
    """
    if batch_size < 1 or linger_ms < 1:
        raise ValueError(f"batch size and linger must be at least 1, not {batch_size}, {linger_ms}")
    return {
        "python.fn-execution.arrow.batch.size": str(batch_size),
        "python.fn-execution.bundle.size": str(batch_size),
        "python.fn-execution.bundle.time": str(linger_ms),
    }
