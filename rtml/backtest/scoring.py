"""Scores for a backtest: every model through the live job's `Scorer`, each model in a process of
its own when there are several.

One model's scoring is one Python thread's work at a time: the scorer's event loop, the loopback
V2 server's and the estimator share the interpreter lock (two models from two threads of one
process ran about 2x slower than one after the other, 2026-12-06). In processes of their own,
each with its own loopback server, they use the machine's cores. Each process answers with its
predictions as columns, not Prediction objects: 800k of those take ~2 s to pickle and ~2 s to
unpickle, the columns a fraction of that.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import queue
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, TextIO

import numpy as np
import pandas as pd

from rtml.backtest.model_folders import ModelFolder
from rtml.backtest.progress import Progress
from rtml.scoring.scorer import Prediction, ScorePath

# --no-timeouts: an offline run waits for its own loopback server as long as it takes (a day).
NO_TIMEOUT_MS = 86_400_000.0
# How many rows a scoring process scores between two progress messages (whole batches).
_PROGRESS_ROWS = 20_000
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# One str object per path: pickle sends a repeated object once.
_PATH_TEXT = {path: str(path) for path in ScorePath}


class ScoringFailed(RuntimeError):
    """A model's scoring process failed; the message has its traceback."""


@dataclass
class ModelPredictions:
    """One model's predictions for a backtest's rows, column by column, in row order."""

    model: ModelFolder
    threshold: float
    scores: np.ndarray  # float64
    decisions: np.ndarray  # bool
    paths: list[str]
    model_versions: list[str]
    errors: list[str | None]
    metrics: dict[str, int]

    @classmethod
    def of(
        cls,
        model: ModelFolder,
        threshold: float,
        predictions: Sequence[Prediction],
        metrics: dict[str, int],
    ) -> ModelPredictions:
        return cls(
            model,
            threshold,
            np.array([p.score for p in predictions], dtype=np.float64),
            np.array([p.decision for p in predictions], dtype=bool),
            [_PATH_TEXT[p.path] for p in predictions],
            [p.model_version for p in predictions],
            [p.error for p in predictions],
            metrics,
        )

    def __len__(self) -> int:
        return len(self.scores)


def scoring_settings(settings: Any, model: ModelFolder, base_url: str, *, no_timeouts: bool) -> Any:
    """The scorer settings of the live job (RTML_SCORING_*), for `model` on the loopback server;
    the decision threshold is the model's own (production: RTML_SCORING_THRESHOLD if set, else
    its metadata's, else 0.5, as the live job decides)."""
    scoring = settings.scoring_settings(model.feature_names)
    threshold = settings.scoring_threshold
    explicit = "scoring_threshold" in settings.model_fields_set
    if model.threshold is not None and not (model.role == "production" and explicit):
        threshold = model.threshold
    changes: dict[str, Any] = {
        "model_name": model.name, "model_version": None, "base_url": base_url,
        "threshold": threshold,
    }  # fmt: skip
    if no_timeouts:
        changes |= {"request_timeout_ms": NO_TIMEOUT_MS, "deadline_ms": NO_TIMEOUT_MS}
    return dataclasses.replace(scoring, **changes)


def score_model(
    model: ModelFolder,
    rows: pd.DataFrame,
    settings: Any,
    *,
    no_timeouts: bool,
    on_rows: Callable[[int], None] = lambda done: None,
) -> ModelPredictions:
    """`model`'s predictions for `rows`, through the live job's Scorer against a loopback V2
    server serving its primary, in batches of RTML_SCORING_BATCH_SIZE rows (one score() call
    each, as one Arrow batch in the job); `on_rows(done)` after each batch."""
    import joblib

    from rtml import model_repo
    from rtml.backtest.local_server import LocalV2Server, ServedModel
    from rtml.scoring import DefaultRule, Scorer

    served = ServedModel(
        model.name,
        model.version.rsplit("/", 1)[-1],
        joblib.load(model.primary / model_repo.MODEL_FILENAME),
        len(model.feature_names),
    )
    batch = settings.scoring_batch_size
    predictions: list[Prediction] = []
    with LocalV2Server({model.name: served}) as server:
        scoring = scoring_settings(settings, model, server.url, no_timeouts=no_timeouts)
        # The rule is the live job's default (udfs.scoring: DefaultRule()).
        with Scorer(scoring, model.fallback, DefaultRule()) as scorer:
            frame = rows[list(model.feature_names)]
            for start in range(0, len(frame), batch):
                predictions += scorer.score(frame.iloc[start : start + batch])
                on_rows(len(predictions))
            metrics = scorer.metrics().as_dict()
    return ModelPredictions.of(model, scoring.threshold, predictions, metrics)


def scoring_processes(setting: int, models: int) -> int:
    """How many processes score `models` models: the setting (0: one per model, at most one per
    core), never more than the models (pure but for the core count)."""
    wanted = setting if setting > 0 else (os.cpu_count() or 1)
    return max(1, min(wanted, models))


def score_all(
    models: Sequence[ModelFolder],
    rows: pd.DataFrame,
    settings: Any,
    *,
    no_timeouts: bool,
    stream: TextIO | None = None,
    processes: int = 1,
) -> list[ModelPredictions]:
    """Every model's predictions for `rows`, in `models` order. With `processes` > 1, that many
    models are scored at once, each in a new Python process of its own (not forked: the parent
    may hold a JVM gateway and its threads); with 1, one after the other in this process."""
    total = len(rows) * len(models)
    progress = Progress("scoring", total, stream=stream)
    try:
        if processes <= 1 or len(models) <= 1:
            done = 0
            out = []
            for model in models:
                out.append(
                    score_model(
                        model, rows, settings, no_timeouts=no_timeouts,
                        on_rows=lambda n, before=done: progress.update(before + n),
                    )
                )  # fmt: skip
                done += len(rows)
            return out
        return _score_in_processes(models, rows, settings, no_timeouts, processes, progress)
    finally:
        progress.finish()


def _score_in_processes(
    models: Sequence[ModelFolder],
    rows: pd.DataFrame,
    settings: Any,
    no_timeouts: bool,
    processes: int,
    progress: Progress,
) -> list[ModelPredictions]:
    messages: queue.Queue[tuple[int, tuple[str, Any]]] = queue.Queue()
    waiting = list(enumerate(models))
    running: dict[int, subprocess.Popen[bytes]] = {}
    results: dict[int, ModelPredictions] = {}
    done_rows: dict[int, int] = {}
    try:
        while waiting or running:
            while waiting and len(running) < processes:
                index, model = waiting.pop(0)
                running[index] = _start(
                    index, (model, rows[list(model.feature_names)], settings, no_timeouts),
                    messages, threads=max(1, (os.cpu_count() or 1) // processes),
                )  # fmt: skip
            index, (kind, value) = messages.get()
            if index not in running:  # the end of output after its answer
                continue
            if kind == "rows":
                done_rows[index] = value
                progress.update(sum(done_rows.values()))
                continue
            process = running.pop(index)
            code = process.wait(timeout=30)
            if kind == "done":
                results[index] = value
                done_rows[index] = len(rows)
                progress.update(sum(done_rows.values()))
            elif kind == "error":
                raise ScoringFailed(f"scoring {models[index].name} failed:\n{value}")
            else:
                raise ScoringFailed(
                    f"scoring {models[index].name} stopped without an answer (exit code {code})"
                )
    finally:
        for process in running.values():
            process.kill()
            process.wait(timeout=30)
    return [results[i] for i in range(len(models))]


def _start(
    index: int,
    job: tuple[Any, ...],
    messages: queue.Queue[tuple[int, tuple[str, Any]]],
    *,
    threads: int,
) -> subprocess.Popen[bytes]:
    """A scoring process (`python -m rtml.backtest.scoring_process`) given `job`; a thread puts
    its messages on `messages`, then ("eof", None) when its output ends. Its estimator gets
    `threads` OpenMP/BLAS threads unless the environment says otherwise: two processes of a
    thread per core each ran 7x slower than one process (30 against 215 s for 2 x 800k rows,
    2026-12-06), OpenMP's waiting threads spinning on the cores the other process needs.

    Not multiprocessing: its spawned children import the caller's main module again, and a
    script without a `__main__` guard then dies in the child while the parent still writes to it
    (a hang, seen while measuring this)."""
    env = {name: str(threads) for name in _THREAD_VARIABLES} | dict(os.environ)
    process = subprocess.Popen(
        [sys.executable, "-m", "rtml.backtest.scoring_process"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert process.stdin is not None and process.stdout is not None
    output = process.stdout

    def read() -> None:
        with output:
            while True:
                try:
                    message = pickle.load(output)
                except EOFError:
                    messages.put((index, ("eof", None)))
                    return
                except Exception as error:  # noqa: BLE001 - a garbled stream: the process's end
                    messages.put((index, ("error", f"unreadable answer: {error!r}")))
                    return
                messages.put((index, message))

    threading.Thread(target=read, name=f"rtml-scoring-{index}", daemon=True).start()
    try:
        with process.stdin:
            pickle.dump(job, process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
    except BrokenPipeError:
        pass  # it died before reading everything: its reader says so
    return process


def serve_one_job(job_input: BinaryIO, answers: BinaryIO) -> None:
    """A scoring process's work: one pickled (model, rows, settings, no_timeouts) from
    `job_input`, then ("rows", done) messages and a last ("done", ModelPredictions) or
    ("error", traceback) on `answers`, pickled one after the other."""
    model, rows, settings, no_timeouts = pickle.load(job_input)
    reported = 0

    def send(message: tuple[str, Any]) -> None:
        pickle.dump(message, answers, protocol=pickle.HIGHEST_PROTOCOL)
        answers.flush()

    def report(done: int) -> None:
        nonlocal reported
        if done - reported >= _PROGRESS_ROWS:
            send(("rows", done))
            reported = done

    try:
        send(("done", score_model(model, rows, settings, no_timeouts=no_timeouts, on_rows=report)))
    except Exception:  # noqa: BLE001 - the parent raises it, with the traceback
        send(("error", traceback.format_exc()))
