"""`Scorer.score(rows)`: one prediction per row, from the model server if it answers in time.

The rows with every feature are split into sub-batches and sent concurrently (at most
`max_in_flight` at once) from a private event loop thread, each attempt bounded by the request
timeout and the whole call by the deadline; retryable failures are retried with backoff while
time is left, and the circuit breaker refuses requests while the server keeps failing. Rows the
server did not score go down the fallback chain: the local fallback model, then the rule.

When the breaker's cool-down ends, the sub-batch that would probe the server is sent as a probe
in the background and its rows go down the fallback chain at once: a server that is still down
costs the stream nothing, where waiting for the probe held the whole batch (and the Flink bundle
behind it) for a request timeout every cool-down. The probe's answer only tells the breaker
whether to close; the first batch after a recovery is the one that falls back needlessly.

`score()` is synchronous, never raises for bad rows or a bad server, and returns within the
deadline plus the time the fallbacks take (milliseconds). It is safe from several threads. The
scorer pickles as its configuration; the loop thread, connections and the fallback model are
made again where it is unpickled (and after a fork), so it can be built before a Flink UDF ships.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from rtml.loop_thread import start_loop_thread, stop_loop_thread
from rtml.scoring.breaker import Admission, BreakerState, CircuitBreaker
from rtml.scoring.fallback import DefaultRule, FallbackModel
from rtml.scoring.features import FeatureMatrix, feature_matrix
from rtml.scoring.retry import Failure, FailureKind, next_retry_delay_ms
from rtml.scoring.settings import ScoringSettings
from rtml.scoring.v2 import AsyncV2Client, RequestFailed

log = logging.getLogger(__name__)

# How much longer than the deadline score() waits for the loop thread before giving up on it
# (it only matters if that thread is starved: the attempts themselves end by the deadline).
_LOOP_SLACK_S = 0.05
_GRACE_S = 0.01
# How long close() waits for the loop to cancel what is in flight and close the connections: a
# loaded machine can keep the loop thread off the CPU for a second, and a loop stopped before
# then leaves its sockets open.
_CLOSE_TIMEOUT_S = 5.0
_SAMPLES_KEPT = 10_000
_PROBING = "breaker half-open: this batch probes the server in the background"


class ScorePath(enum.StrEnum):
    PRIMARY = "primary"
    FALLBACK_MODEL = "fallback_model"
    DEFAULT = "default"


@dataclass(frozen=True, slots=True)
class Prediction:
    score: float
    decision: bool  # score >= the threshold of the model that answered (a fallback has its own)
    path: ScorePath
    model_version: str  # "<model>/<version>" of the model that scored, or the rule's version
    latency_ms: float  # from score() being called to this prediction being known
    error: str | None = None  # why the paths before `path` did not score this row


@dataclass
class ScorerMetrics:
    """Running totals since the scorer was made (a Flink UDF mirrors them into counters)."""

    rows: int = 0
    requests: int = 0  # V2 requests sent (attempts, retries included)
    request_failures: int = 0
    timeouts: int = 0
    retries: int = 0
    breaker_rejections: int = 0  # sub-batches not sent because the breaker was open
    breaker_probes: int = 0  # sub-batches sent half-open as a probe, their rows falling back
    breaker_opened: int = 0
    deadline_exceeded: int = 0  # sub-batches still waiting for a connection at the deadline
    primary: int = 0  # predictions per path
    fallback_model: int = 0
    default: int = 0
    breaker_state: int = 0  # BreakerState: 0 closed, 1 half-open, 2 open

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class _SubResult:
    scores: np.ndarray | None = None
    version: str | None = None
    error: str | None = None
    done_at: float = 0.0  # time.monotonic() when known


@dataclass
class _Samples:
    latency_ms: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=_SAMPLES_KEPT)
    )
    batch_sizes: collections.deque[int] = field(
        default_factory=lambda: collections.deque(maxlen=_SAMPLES_KEPT)
    )


class Scorer:
    """Scores feature rows with a V2 model server, a local fallback model and a rule, in order."""

    def __init__(
        self,
        settings: ScoringSettings,
        fallback_model: str | Path | None = None,
        rule: DefaultRule | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ) -> None:
        self.settings = settings
        self.fallback_path = Path(fallback_model) if fallback_model is not None else None
        self.rule = rule or DefaultRule()
        self.rule.check(settings.feature_names)
        self._clock = clock
        self._seed = seed
        self.fallback: FallbackModel | None = None
        self._fallback_columns: list[int] = []
        if self.fallback_path is not None:
            self.fallback = FallbackModel.load(self.fallback_path, settings.score_column)
            self._fallback_columns = self.fallback.columns(settings.feature_names)
        self._lock = threading.Lock()
        self._metrics = ScorerMetrics()
        self._samples = _Samples()
        self._closed = False
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        s = self.settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: AsyncV2Client | None = None
        self._in_flight: asyncio.Semaphore | None = None
        self._probes: set[asyncio.Task] = set()  # referenced until done (the loop keeps weak ones)
        self._pid = os.getpid()
        self._random = random.Random(self._seed)
        self.breaker = CircuitBreaker(
            s.breaker_failure_threshold, s.breaker_cooldown_ms / 1000, s.breaker_half_open_probes,
            clock=self._clock,
        )  # fmt: skip

    def __getstate__(self) -> dict[str, Any]:
        return {
            "settings": self.settings, "fallback_model": self.fallback_path, "rule": self.rule,
            "seed": self._seed,
        }  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["settings"], state["fallback_model"], state["rule"], seed=state["seed"]
        )

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- public ----------------------------------------------------------------------------------

    def score(self, rows: object) -> list[Prediction]:
        """One prediction per row of `rows` (a DataFrame, a list of dicts or a 2-D array), in order.

        Rows lacking a feature (missing, null, NaN, non-numeric) are not sent to the server (it
        would reject the whole sub-batch); they go to the fallback model if it takes NaN, else to
        the rule, with the missing features named in `error`.
        """
        started = time.monotonic()
        matrix = feature_matrix(rows, self.settings.feature_names)
        n = matrix.values.shape[0]
        scores = np.full(n, np.nan)
        versions: list[str] = [""] * n
        paths: list[ScorePath] = [ScorePath.DEFAULT] * n
        errors: list[str | None] = [None] * n
        latencies = np.zeros(n)

        complete = matrix.complete
        sendable = np.flatnonzero(complete)
        for i in np.flatnonzero(~complete):
            errors[i] = f"primary: skipped, missing features {matrix.missing(i)}"
        if sendable.size:
            for batch, result in self._run_primary(matrix.values[sendable], sendable, started):
                if result.scores is not None:
                    scores[batch] = result.scores
                    version = f"{self.settings.model_name}/{result.version or '?'}"
                    for i in batch:
                        paths[i], versions[i] = ScorePath.PRIMARY, version
                    latencies[batch] = (result.done_at - started) * 1000
                else:
                    for i in batch:
                        errors[i] = f"primary: {result.error}"

        failed = np.flatnonzero(np.isnan(scores))
        if failed.size:
            self._fall_back(matrix, failed, scores, paths, versions, errors)
            latencies[failed] = (time.monotonic() - started) * 1000

        threshold = self.settings.threshold
        fallback_threshold = threshold
        if self.fallback is not None and self.fallback.threshold is not None:
            fallback_threshold = self.fallback.threshold
        predictions = [
            Prediction(
                float(scores[i]),
                bool(
                    scores[i]
                    >= (fallback_threshold if paths[i] is ScorePath.FALLBACK_MODEL else threshold)
                ),
                paths[i],
                versions[i],
                float(latencies[i]),
                errors[i],
            )  # fmt: skip
            for i in range(n)
        ]
        with self._lock:
            m = self._metrics
            m.rows += n
            counts = collections.Counter(paths)
            m.primary += counts[ScorePath.PRIMARY]
            m.fallback_model += counts[ScorePath.FALLBACK_MODEL]
            m.default += counts[ScorePath.DEFAULT]
        return predictions

    def metrics(self) -> ScorerMetrics:
        """A snapshot of the running totals and the breaker's state now."""
        with self._lock:
            snapshot = ScorerMetrics(**self._metrics.as_dict())
        snapshot.breaker_state = int(self.breaker.state)
        snapshot.breaker_opened = self.breaker.opened
        return snapshot

    def drain_samples(self) -> tuple[list[float], list[int]]:
        """(request latencies in ms, sub-batch sizes) recorded since the last call."""
        with self._lock:
            latency, sizes = list(self._samples.latency_ms), list(self._samples.batch_sizes)
            self._samples.latency_ms.clear()
            self._samples.batch_sizes.clear()
        return latency, sizes

    @property
    def breaker_state(self) -> BreakerState:
        return self.breaker.state

    def close(self) -> None:
        """Close the connections and stop the event loop thread (idempotent)."""
        with self._lock:
            self._closed = True
            loop, thread, client = self._loop, self._thread, self._client
            if loop is None or self._pid != os.getpid():
                self._reset_runtime()
                return
        # Not under the lock: the loop's tasks take it to count, and must finish to let go.
        error = stop_loop_thread(loop, thread, lambda: _shut_down(client), _CLOSE_TIMEOUT_S)
        if error is not None:  # a stuck loop must not keep us from closing
            log.warning(
                "the scorer's event loop did not shut down within %.0f s: %r",
                _CLOSE_TIMEOUT_S, error,
            )  # fmt: skip
        with self._lock:
            self._reset_runtime()

    # -- the primary path ------------------------------------------------------------------------

    def _run_primary(
        self, values: np.ndarray, index: np.ndarray, started: float
    ) -> list[tuple[np.ndarray, _SubResult]]:
        size = self.settings.sub_batch_size
        batches = [index[i : i + size] for i in range(0, len(index), size)]
        blocks = [values[i : i + size] for i in range(0, len(index), size)]
        deadline = started + self.settings.deadline_ms / 1000
        loop = self._ensure_loop()
        future = asyncio.run_coroutine_threadsafe(self._primary(blocks, deadline), loop)
        try:
            wait_s = max(0.0, deadline - time.monotonic()) + _GRACE_S + _LOOP_SLACK_S
            results = future.result(timeout=wait_s)
        except BaseException as error:  # noqa: BLE001 - never fail the caller: fall back instead
            future.cancel()
            if isinstance(error, KeyboardInterrupt | SystemExit):
                raise
            reason = (
                f"deadline of {self.settings.deadline_ms:.0f} ms passed (scorer loop busy)"
                if isinstance(error, TimeoutError)
                else f"scorer error {error!r}"
            )
            log.warning("primary scoring failed for %d rows: %s", len(index), reason)
            results = [_SubResult(error=reason) for _ in batches]
        return list(zip(batches, results, strict=True))

    async def _primary(self, blocks: list[np.ndarray], deadline: float) -> list[_SubResult]:
        tasks = [asyncio.ensure_future(self._sub_batch(block, deadline)) for block in blocks]
        # Every attempt ends by the deadline by itself; the grace lets it say why (a timeout, a
        # retry cut short) before being cancelled as a mere "deadline passed".
        remaining = max(0.0, deadline - time.monotonic()) + _GRACE_S
        try:
            done, pending = await asyncio.wait(tasks, timeout=remaining)
        finally:  # also when score() gave up on us: nothing may run on after it returned
            for task in tasks:
                task.cancel()
        if pending:
            await asyncio.wait(pending)
        results = []
        for task in tasks:
            if task in done and not task.cancelled() and task.exception() is None:
                results.append(task.result())
            else:
                if task in done and not task.cancelled():
                    log.error("scoring a sub-batch failed", exc_info=task.exception())
                results.append(
                    _SubResult(error=f"deadline of {self.settings.deadline_ms:.0f} ms passed")
                )
        return results

    async def _sub_batch(self, block: np.ndarray, deadline: float) -> _SubResult:
        s = self.settings
        in_flight = self._in_flight  # close() may reset the attributes while we finish
        assert in_flight is not None
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await in_flight.acquire()
        except TimeoutError:
            self._count(deadline_exceeded=1)
            return _SubResult(
                error=f"deadline of {s.deadline_ms:.0f} ms passed waiting for a connection",
                done_at=time.monotonic(),
            )
        try:
            failure: Failure | None = None
            retries = 0
            while True:
                admission = self.breaker.admit()
                if admission is Admission.REFUSE:
                    self._count(breaker_rejections=1)
                    reason = _join(_tried(failure, retries), "breaker open")
                    return _SubResult(error=reason, done_at=time.monotonic())
                if admission is Admission.PROBE:  # a first try, or a retry after a cool-down
                    self._probe_in_background(block)
                    reason = _join(_tried(failure, retries), _PROBING)
                    return _SubResult(error=reason, done_at=time.monotonic())
                outcome = await self._attempt(block, deadline)
                if isinstance(outcome, _SubResult):
                    return outcome
                failure = outcome
                remaining_ms = (deadline - time.monotonic()) * 1000
                rand = self._random.random()
                delay = next_retry_delay_ms(failure, retries, remaining_ms, s, rand)
                if delay is None:
                    return _SubResult(error=_describe(failure, retries), done_at=time.monotonic())
                retries += 1
                self._count(retries=1)
                await asyncio.sleep(delay / 1000)
        finally:
            in_flight.release()

    def _probe_in_background(self, block: np.ndarray) -> None:
        """Send `block` as the half-open breaker's probe, without anyone waiting for it."""
        self._count(breaker_probes=1)
        probe = asyncio.ensure_future(self._probe(block))
        self._probes.add(probe)
        probe.add_done_callback(self._probes.discard)

    async def _probe(self, block: np.ndarray) -> None:
        in_flight = self._in_flight
        assert in_flight is not None
        async with in_flight:
            await self._attempt(block, time.monotonic() + self.settings.request_timeout_ms / 1000)

    async def _attempt(self, block: np.ndarray, deadline: float) -> Failure | _SubResult:
        """One request; the breaker has allowed it and hears how it went."""
        client = self._client
        assert client is not None
        remaining_ms = (deadline - time.monotonic()) * 1000
        timeout_ms = min(self.settings.request_timeout_ms, remaining_ms)
        cut = ", cut by the deadline" if timeout_ms < self.settings.request_timeout_ms else ""
        sent = time.monotonic()
        self._count(requests=1)
        with self._lock:
            self._samples.batch_sizes.append(block.shape[0])
        try:
            async with asyncio.timeout(max(0.0, timeout_ms) / 1000):
                scores, version = await client.infer(block)
        except TimeoutError:
            failure = Failure(FailureKind.TIMEOUT, f"{max(0.0, timeout_ms):.0f} ms{cut}")
            self._count(timeouts=1)
        except RequestFailed as error:
            failure = error.failure
        except asyncio.CancelledError:
            self.breaker.record_failure()  # the deadline: as good as a timeout
            raise
        except Exception as error:  # noqa: BLE001 - e.g. a row the JSON encoder refuses
            failure = Failure(FailureKind.SCHEMA, f"request failed: {error!r}"[:300])
        else:
            self.breaker.record_success()
            done = time.monotonic()
            with self._lock:
                self._samples.latency_ms.append((done - sent) * 1000)
            return _SubResult(scores, version, done_at=done)
        self.breaker.record_failure()
        self._count(request_failures=1)
        return failure

    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, value in increments.items():
                setattr(self._metrics, name, getattr(self._metrics, name) + value)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RuntimeError("this Scorer is closed")
            if self._pid != os.getpid():  # forked: the loop thread did not come along
                self._reset_runtime()
            if self._loop is None:
                self._client = AsyncV2Client(self.settings)
                self._in_flight = asyncio.Semaphore(self.settings.max_in_flight)
                self._loop, self._thread = start_loop_thread(
                    f"rtml-scorer-{self.settings.model_name}"
                )
            return self._loop

    # -- the fallbacks ---------------------------------------------------------------------------

    def _fall_back(
        self,
        matrix: FeatureMatrix,
        rows: np.ndarray,
        scores: np.ndarray,
        paths: list[ScorePath],
        versions: list[str],
        errors: list[str | None],
    ) -> None:
        """Score `rows` with the fallback model where it can, the rule elsewhere (in place)."""
        left = rows
        model = self.fallback
        if model is not None:
            values = matrix.values[np.ix_(rows, self._fallback_columns)]
            usable = np.ones(len(rows), bool) if model.allow_nan else np.isfinite(values).all(1)
            for i in rows[~usable]:
                errors[i] = _join(errors[i], "fallback_model: missing features, takes no NaN")
            if usable.any():
                try:
                    fallback_scores = model.scores(values[usable])
                    ok = np.isfinite(fallback_scores)
                except Exception as error:  # noqa: BLE001 - the rule still answers
                    log.warning("fallback model %s failed: %r", model.version, error)
                    for i in rows[usable]:
                        errors[i] = _join(errors[i], f"fallback_model: {error!r}"[:300])
                else:
                    for i, score, good in zip(rows[usable], fallback_scores, ok, strict=True):
                        if good:
                            scores[i], paths[i] = score, ScorePath.FALLBACK_MODEL
                            versions[i] = model.version
                        else:
                            errors[i] = _join(errors[i], "fallback_model: non-finite score")
            left = rows[np.isnan(scores[rows])]
        else:
            for i in rows:
                errors[i] = _join(errors[i], "fallback_model: none configured")
        if left.size:
            rule_scores = self.rule.scores(matrix.values[left], matrix.feature_names)
            for i, score in zip(left, rule_scores, strict=True):
                scores[i], paths[i], versions[i] = score, ScorePath.DEFAULT, self.rule.version


async def _shut_down(client: AsyncV2Client | None) -> None:
    """Cancel what is in flight and close every connection, on the scorer's loop."""
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if client is not None:
        client.close()
    # Transports close in a callback of the next loop iteration: let it run before the loop
    # stops, or the sockets stay open until the garbage collector finds them.
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def _describe(failure: Failure, retries: int) -> str:
    text = failure.describe()
    return f"{text} ({retries + 1} attempts)" if retries else text


def _tried(failure: Failure | None, retries: int) -> str | None:
    """What the attempts so far met, if any failed."""
    return None if failure is None else _describe(failure, retries)


def _join(first: str | None, second: str) -> str:
    return f"{first}; {second}" if first else second
