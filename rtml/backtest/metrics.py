"""Metrics of a backtest: how candidate models and production would have scored the same events.

Pure functions over the backtest frame (one row per evaluated event; no I/O), and `summarize`,
which gathers them into one JSON-ready dict for `rtml.backtest.report` and `summary.json`.

The frame's columns:

- `event_id` (str), `entity` (str), `ts` (int, epoch ms), `label` (1.0 fraud, 0.0 confirmed
  legitimate, NaN no label by the cut-off: counted as legitimate, as in training, and reported as
  `unlabelled`);
- per model M: `score:M` (float), `decision:M` (bool), `path:M` ("primary", "fallback_model" or
  "default": the `rtml.scoring.ScorePath` that scored the event);
- `recorded_score`, `recorded_decision`, `recorded_version`: what production published on the
  predictions topic for the event (NaN/None when it published nothing for it).

**Production reference.** Drift (PSI) and disagreements compare a model with what production
scored: per event, the recorded score and decision when there is one, else those of the model
with role "production" (production's version re-scored by the backtest).

**PSI** (population stability index) of scores `x` against reference scores `r`: the reference's
deciles (quantiles 0.1 .. 0.9, duplicates dropped) cut the line into at most 10 bins, open at both
ends; with `p_i`, `q_i` the shares of `x` and `r` in bin i, each floored at 1e-4 so an empty bin
stays finite,

    PSI = sum_i (p_i - q_i) * ln(p_i / q_i)

It is 0 for identical distributions. Usual reading: < 0.1 stable, 0.1-0.25 a moderate shift,
> 0.25 a large one.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rtml.scoring.scorer import ScorePath
from rtml.training.models import jsonable

ROLES = ("candidate", "production")
PATHS = tuple(path.value for path in ScorePath)  # primary, fallback_model, default
BASE_COLUMNS = (
    "event_id",
    "entity",
    "ts",
    "label",
    "recorded_score",
    "recorded_decision",
    "recorded_version",
)
PSI_BINS = 10
PSI_EPSILON = 1e-4  # floor of a bin's share: an empty bin adds a large but finite term
QUANTILES = {"p01": 0.01, "p10": 0.10, "p50": 0.50, "p90": 0.90, "p99": 0.99}


class BacktestFrameError(ValueError):
    """The backtest frame or the model list cannot be summarized (missing columns, bad values)."""


@dataclass(frozen=True)
class ScoredModel:
    """A model whose scores, decisions and paths are columns of the backtest frame."""

    name: str  # e.g. "candidate-a", "production"
    role: str  # "candidate" or "production" (the production version re-scored by the backtest)
    threshold: float  # decision = score >= threshold
    version: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise BacktestFrameError("a scored model needs a name")
        if self.role not in ROLES:
            raise BacktestFrameError(
                f"model {self.name!r}: role must be one of {', '.join(ROLES)}, not {self.role!r}"
            )
        if not math.isfinite(self.threshold):
            raise BacktestFrameError(
                f"model {self.name!r}: threshold {self.threshold} is not finite"
            )


def score_column(model: str) -> str:
    return f"score:{model}"


def decision_column(model: str) -> str:
    return f"decision:{model}"


def path_column(model: str) -> str:
    return f"path:{model}"


# --- checks -------------------------------------------------------------------------------------


def production_model(models: Sequence[ScoredModel]) -> ScoredModel | None:
    """The model with role "production", or None; more than one is an error."""
    production = [model for model in models if model.role == "production"]
    if len(production) > 1:
        names = ", ".join(repr(model.name) for model in production)
        raise BacktestFrameError(f"more than one model has role 'production': {names}")
    return production[0] if production else None


def check_frame(frame: pd.DataFrame, models: Sequence[ScoredModel]) -> None:
    """Raise BacktestFrameError unless `frame` holds every column `models` need, with valid values.

    Valid: at least one event and one model, unique model names, labels 1, 0 or NaN, finite
    scores, decisions without gaps, paths among `PATHS`.
    """
    if not models:
        raise BacktestFrameError("no models to summarize")
    names = [model.name for model in models]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise BacktestFrameError(f"model names must be unique; repeated: {', '.join(duplicates)}")
    production_model(models)
    needed = list(BASE_COLUMNS) + [
        column(model.name)
        for model in models
        for column in (score_column, decision_column, path_column)
    ]
    missing = [column for column in needed if column not in frame.columns]
    if missing:
        raise BacktestFrameError(f"the backtest frame has no column(s): {', '.join(missing)}")
    if frame.empty:
        raise BacktestFrameError("the backtest frame has no events: nothing to summarize")
    if pd.to_numeric(frame["ts"], errors="coerce").isna().any():
        raise BacktestFrameError("ts must be epoch milliseconds on every event")
    check_booleans(frame, "recorded_decision")
    label = pd.to_numeric(frame["label"], errors="coerce")
    bad_labels = frame["label"].notna() & ~label.isin([0.0, 1.0])
    if bad_labels.any():
        raise BacktestFrameError(
            f"labels must be 1 (fraud), 0 (legitimate) or NaN (none); {int(bad_labels.sum())} "
            f"are not, e.g. event {frame.loc[bad_labels, 'event_id'].iloc[0]!r}: "
            f"{frame.loc[bad_labels, 'label'].iloc[0]!r}"
        )
    for model in models:
        scores = pd.to_numeric(frame[score_column(model.name)], errors="coerce")
        bad = ~np.isfinite(scores.to_numpy(dtype=float))
        if bad.any():
            raise BacktestFrameError(
                f"{score_column(model.name)}: {int(bad.sum())} score(s) are missing or not "
                f"finite, e.g. event {frame['event_id'].iloc[int(np.argmax(bad))]!r}"
            )
        if frame[decision_column(model.name)].isna().any():
            raise BacktestFrameError(f"{decision_column(model.name)} has missing decisions")
        check_booleans(frame, decision_column(model.name))
        unknown = sorted(set(frame[path_column(model.name)].astype(str)) - set(PATHS))
        if unknown:
            raise BacktestFrameError(
                f"{path_column(model.name)}: unknown path(s) {', '.join(map(repr, unknown))}; "
                f"expected {', '.join(PATHS)}"
            )


def check_booleans(frame: pd.DataFrame, column: str) -> None:
    """Decisions must be True/False (or 1/0), missing allowed: a string such as "false" would
    otherwise count as True."""
    values = frame[column].dropna()
    bad = ~values.isin([True, False])
    if bad.any():
        raise BacktestFrameError(
            f"{column} must hold True or False; {int(bad.sum())} value(s) do not, "
            f"e.g. {values[bad].iloc[0]!r}"
        )


# --- the frame's columns as arrays --------------------------------------------------------------


def fraud_labels(label: pd.Series) -> np.ndarray:
    """1 for fraud, 0 otherwise: a missing label counts as legitimate (no chargeback by the
    cut-off), as in training."""
    return (pd.to_numeric(label, errors="coerce") == 1.0).to_numpy(dtype=int)


def label_counts(label: pd.Series) -> dict[str, int]:
    """How many events are fraud, confirmed legitimate, and without a label."""
    numeric = pd.to_numeric(label, errors="coerce")
    return {
        "fraud": int((numeric == 1.0).sum()),
        "legit": int((numeric == 0.0).sum()),
        "unlabelled": int(numeric.isna().sum()),
    }


def production_reference(
    frame: pd.DataFrame, production: ScoredModel | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per event: production's score, decision and where they come from ("recorded" when
    production published a prediction for the event, else "rescored" from the production model,
    else "none" with a NaN score and a False decision)."""
    recorded = (frame["recorded_score"].notna() & frame["recorded_decision"].notna()).to_numpy()
    scores = np.full(len(frame), np.nan)
    decisions = np.zeros(len(frame), dtype=bool)
    source = np.full(len(frame), "none", dtype=object)
    if production is not None:
        scores[:] = frame[score_column(production.name)].to_numpy(dtype=float)
        decisions[:] = frame[decision_column(production.name)].to_numpy(dtype=bool)
        source[:] = "rescored"
    scores[recorded] = frame.loc[recorded, "recorded_score"].to_numpy(dtype=float)
    decisions[recorded] = frame.loc[recorded, "recorded_decision"].to_numpy(dtype=bool)
    source[recorded] = "recorded"
    return scores, decisions, source


# --- small metrics ------------------------------------------------------------------------------


def confusion_counts(labels: np.ndarray, predicted: np.ndarray) -> dict[str, int]:
    """tp, fp, tn, fn of boolean predictions against 0/1 labels."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(predicted).astype(bool)
    return {
        "tp": int(np.sum(predicted & labels)),
        "fp": int(np.sum(predicted & ~labels)),
        "tn": int(np.sum(~predicted & ~labels)),
        "fn": int(np.sum(~predicted & labels)),
    }


def precision_recall_f1(counts: Mapping[str, int]) -> dict[str, float]:
    """Precision, recall and F1 from confusion counts; 0.0 where the denominator is 0 (no
    positive predictions, or no fraud), as scikit-learn's zero_division=0."""
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Precision, recall, F1 and confusion counts when deciding fraud at score >= threshold."""
    counts = confusion_counts(labels, np.asarray(scores) >= threshold)
    return {"threshold": float(threshold), **precision_recall_f1(counts), **counts}


def has_both_classes(labels: np.ndarray) -> bool:
    return 0 < int(np.sum(labels)) < len(labels)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC; None when the events hold only one class (it is undefined then)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if has_both_classes(labels) else None


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Average precision (the area under the precision-recall curve, step-wise); None with only
    one class."""
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(labels, scores)) if has_both_classes(labels) else None


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """False and true positive rates of the ROC curve; None with only one class."""
    from sklearn.metrics import roc_curve

    if not has_both_classes(labels):
        return None
    false_positive_rate, true_positive_rate, _ = roc_curve(labels, scores)
    return false_positive_rate, true_positive_rate


def pr_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Recall and precision of the precision-recall curve; None with only one class."""
    from sklearn.metrics import precision_recall_curve

    if not has_both_classes(labels):
        return None
    precision, recall, _ = precision_recall_curve(labels, scores)
    return recall, precision


def path_counts(paths: Iterable[str]) -> dict[str, int]:
    """Events per scoring path, every known path included (0 when unused)."""
    counts = dict.fromkeys(PATHS, 0)
    # Counter counts in C; str() once per distinct path, not per event (800k events: 0.2 s each)
    for path, n in collections.Counter(paths).items():
        counts[str(path)] = counts.get(str(path), 0) + n
    return counts


def fallback_rate(counts: Mapping[str, int]) -> float:
    """Share of events not scored by the primary model (fallback model or default rule)."""
    total = sum(counts.values())
    return (total - counts.get(ScorePath.PRIMARY.value, 0)) / total if total else 0.0


def agreement(decisions: np.ndarray, recorded: pd.Series) -> dict[str, Any]:
    """Share of events with a recorded production decision where `decisions` equals it.

    `recorded` holds True/False, or None/NaN where production published nothing; those events are
    not compared. `share` is None when nothing could be compared.
    """
    present = recorded.notna().to_numpy()
    compared = int(present.sum())
    if not compared:
        return {"share": None, "compared": 0, "agree": 0}
    same = np.asarray(decisions, dtype=bool)[present] == recorded[present].to_numpy(dtype=bool)
    return {"share": float(same.mean()), "compared": compared, "agree": int(same.sum())}


def psi(scores: np.ndarray, reference: np.ndarray, *, bins: int = PSI_BINS) -> float | None:
    """Population stability index of `scores` against `reference` (formula in the module
    docstring); None when either side is empty. NaNs are ignored."""
    scores = np.asarray(scores, dtype=float)
    reference = np.asarray(reference, dtype=float)
    scores = scores[~np.isnan(scores)]
    reference = reference[~np.isnan(reference)]
    if not len(scores) or not len(reference):
        return None
    # Ties (e.g. the default rule's constant score) make equal deciles: one bin, not empty ones.
    inner_edges = np.unique(np.quantile(reference, np.arange(1, bins) / bins))
    expected = bin_shares(reference, inner_edges)
    actual = bin_shares(scores, inner_edges)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def bin_shares(values: np.ndarray, inner_edges: np.ndarray) -> np.ndarray:
    """Share of `values` in each bin cut by `inner_edges` (a value on an edge goes to the bin
    above it), floored at PSI_EPSILON."""
    counts = np.bincount(
        np.searchsorted(inner_edges, values, side="right"), minlength=len(inner_edges) + 1
    )
    return np.maximum(counts / len(values), PSI_EPSILON)


def score_quantiles(scores: np.ndarray) -> dict[str, float]:
    """p01, p10, p50, p90 and p99 of the scores (linear interpolation)."""
    values = np.quantile(np.asarray(scores, dtype=float), list(QUANTILES.values()))
    return {key: float(value) for key, value in zip(QUANTILES, values, strict=True)}


def ranking(per_model: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Model names, best first: by average precision, then ROC AUC, then name; undefined (None)
    metrics last.

    Average precision comes first because fraud is rare: ROC AUC is the chance that a random
    fraud scores above a random legitimate event, so with ~97% legitimate traffic a model can
    keep it near 1 while the top of its ranking (the events a block rule or an analyst acts on)
    is crowded with false alarms. Average precision is the mean precision at each fraud's rank:
    it drops exactly when that happens, and it is the metric of the decisions fraud teams pay for.
    """

    def key(name: str) -> tuple[float, float, str]:
        ap = per_model[name].get("average_precision")
        auc = per_model[name].get("auc")
        return (-ap if ap is not None else math.inf, -auc if auc is not None else math.inf, name)

    return sorted(per_model, key=key)


def disagreements(
    frame: pd.DataFrame,
    candidate: ScoredModel,
    reference: tuple[np.ndarray, np.ndarray, np.ndarray],
    limit: int,
) -> list[dict[str, Any]]:
    """The `limit` events where the candidate's score is farthest from production's (ties: by
    event id), with both scores and decisions; events without a production score are skipped."""
    scores, decisions, source = reference
    candidate_scores = frame[score_column(candidate.name)].to_numpy(dtype=float)
    gap = np.abs(candidate_scores - scores)
    rows = pd.DataFrame(
        {
            "event_id": frame["event_id"].astype(str).to_numpy(),
            "gap": gap,
            "position": np.arange(len(frame)),
        }
    )
    rows = rows[~np.isnan(rows["gap"])]
    top = rows.sort_values(["gap", "event_id"], ascending=[False, True]).head(max(limit, 0))
    out = []
    for position in top["position"]:
        event = frame.iloc[position]
        label = event["label"]
        out.append(
            {
                "event_id": str(event["event_id"]),
                "entity": str(event["entity"]),
                "ts": int(event["ts"]),
                "label": None if pd.isna(label) else float(label),
                "candidate_score": float(candidate_scores[position]),
                "production_score": float(scores[position]),
                "difference": float(candidate_scores[position] - scores[position]),
                "candidate_decision": bool(event[decision_column(candidate.name)]),
                "production_decision": bool(decisions[position]),
                "production_source": str(source[position]),
            }
        )
    return out


# --- the summary --------------------------------------------------------------------------------


def summarize(
    frame: pd.DataFrame, models: list[ScoredModel], *, top_disagreements: int = 20
) -> dict:
    """Everything the report shows, as plain JSON values (floats, ints, str, None; no NaN).

    Keys: `events`, `labelled` (fraud/legit/unlabelled), `production_threshold` (None without a
    production model), `production_reference` (events whose production score is recorded,
    re-scored, or missing), `recorded` (events with a recorded prediction, per version),
    `models` (per model, see `model_summary`), `ranking` (names, best first; see `ranking`) and
    `top_disagreements` (per candidate; see `disagreements`).

    Raises BacktestFrameError (a ValueError) on an empty frame, missing columns or bad values.
    """
    check_frame(frame, models)
    labels = fraud_labels(frame["label"])
    production = production_model(models)
    reference = production_reference(frame, production)
    per_model = {
        model.name: model_summary(frame, model, labels, production, reference) for model in models
    }
    recorded_versions = frame.loc[frame["recorded_version"].notna(), "recorded_version"]
    return jsonable(
        {
            "events": len(frame),
            "labelled": label_counts(frame["label"]),
            "production_threshold": production.threshold if production else None,
            "production_reference": {
                source: int(np.sum(reference[2] == source))
                for source in ("recorded", "rescored", "none")
            },
            "recorded": {
                "events": len(recorded_versions),
                "versions": recorded_versions.astype(str).value_counts().sort_index().to_dict(),
            },
            "models": per_model,
            "ranking": ranking(per_model),
            "top_disagreements": {
                model.name: disagreements(frame, model, reference, top_disagreements)
                for model in models
                if model.role == "candidate"
            },
        }
    )


def model_summary(
    frame: pd.DataFrame,
    model: ScoredModel,
    labels: np.ndarray,
    production: ScoredModel | None,
    reference: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> dict[str, Any]:
    """One model's metrics.

    `at_threshold` and `at_production_threshold` (only with a production model) decide at
    score >= threshold; `as_decided` counts the `decision:M` column instead, which differs when
    fallback paths decided with their own thresholds. `agreement` compares `decision:M` with the
    recorded production decisions; `psi` compares the score distribution with production's.
    """
    scores = frame[score_column(model.name)].to_numpy(dtype=float)
    decided = frame[decision_column(model.name)].to_numpy(dtype=bool)
    paths = path_counts(frame[path_column(model.name)])
    summary: dict[str, Any] = {
        "role": model.role,
        "version": model.version,
        "threshold": model.threshold,
        "auc": roc_auc(labels, scores),
        "average_precision": average_precision(labels, scores),
        "at_threshold": at_threshold(labels, scores, model.threshold),
    }
    if production is not None:
        summary["at_production_threshold"] = at_threshold(labels, scores, production.threshold)
    as_decided = confusion_counts(labels, decided)
    summary["as_decided"] = {**precision_recall_f1(as_decided), **as_decided}
    summary["paths"] = paths
    summary["fallback_rate"] = fallback_rate(paths)
    summary["agreement"] = agreement(decided, frame["recorded_decision"])
    summary["psi"] = psi(scores, reference[0])
    summary["score_quantiles"] = score_quantiles(scores)
    return summary
