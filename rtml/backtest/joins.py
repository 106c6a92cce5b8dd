"""Labels, recorded predictions and scores joined into one row per evaluated event (pure).

The frame `rtml.backtest.metrics` and `rtml.backtest.report` read: `event_id`, `entity`, `ts`,
`label` (1.0 fraud, 0.0 legitimate, NaN no label by the cut-off), per model M `score:M`,
`decision:M`, `path:M`, and what production recorded for the event on the predictions topic:
`recorded_score`, `recorded_decision`, `recorded_version` (NaN / None when it recorded nothing).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class Labels:
    """event id -> 1.0 / 0.0, and what was not used."""

    by_event: dict[str, float] = field(default_factory=dict)
    records: int = 0
    after_cutoff: int = 0  # labels reported at or after --labels-until: not known yet then
    malformed: int = 0


def read_labels(values: Iterable[bytes | None], until_ms: int | None = None) -> Labels:
    """Labels from the labels topic's values in topic order: a later label of an event replaces
    an earlier one; with `until_ms`, labels whose own time `ts` is not before it are left out
    (as if the backtest ran then). Malformed records are counted, not fatal."""
    out = Labels()
    for value in values:
        out.records += 1
        try:
            label = json.loads(value) if value is not None else None
            event_id, flag = str(label["event_id"]), int(label["label"])
            if flag not in (0, 1):
                raise ValueError(flag)
            reported = label.get("ts")
        except (ValueError, TypeError, KeyError):
            out.malformed += 1
            continue
        if until_ms is not None and isinstance(reported, int | float) and reported >= until_ms:
            out.after_cutoff += 1
            continue
        out.by_event[event_id] = float(flag)
    return out


@dataclass
class Recorded:
    """What the live scoring job recorded per event id (the last record wins)."""

    by_event: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: int = 0
    duplicates: int = 0  # records for an event id already seen (the later one is kept)
    malformed: int = 0


def read_predictions(values: Iterable[bytes | None], event_ids: set[str] | None = None) -> Recorded:
    """Predictions from the predictions topic's values, in topic order, restricted to `event_ids`
    when given. An event scored twice (a replay, a second job) counts as a duplicate; the last
    record wins, as a downstream consumer keyed by event would see it."""
    out = Recorded()
    for value in values:
        try:
            row = json.loads(value) if value is not None else None
            event_id = str(row["event_id"])
            score = float(row["score"])
        except (ValueError, TypeError, KeyError):
            out.malformed += 1
            continue
        if event_ids is not None and event_id not in event_ids:
            continue
        out.records += 1
        if event_id in out.by_event:
            out.duplicates += 1
        decision = row.get("decision")
        out.by_event[event_id] = {
            "score": score,
            "decision": bool(decision) if decision is not None else None,
            "version": row.get("model_version"),
            "path": row.get("path"),
        }
    return out


@dataclass(frozen=True)
class ModelScores:
    """One model's predictions for the frame's events, in the frame's row order."""

    name: str
    scores: Sequence[float]
    decisions: Sequence[bool]
    paths: Sequence[str]


def build_frame(
    features: pd.DataFrame,
    *,
    id_column: str,
    entity_column: str,
    time_column: str,
    labels: Mapping[str, float],
    recorded: Mapping[str, Mapping[str, Any]],
    models: Sequence[ModelScores],
) -> pd.DataFrame:
    """One row per row of `features` (the evaluated events, in order), in the report's layout."""
    event_ids = features[id_column].astype(str).tolist()
    frame = pd.DataFrame(
        {
            "event_id": event_ids,
            "entity": features[entity_column].astype(str).tolist(),
            "ts": features[time_column].astype("int64").to_numpy(),
            "label": np.array([labels.get(i, math.nan) for i in event_ids], dtype=np.float64),
        }
    )
    for model in models:
        if len(model.scores) != len(frame):
            raise ValueError(f"{model.name}: {len(model.scores)} scores for {len(frame)} events")
        frame[f"score:{model.name}"] = np.asarray(model.scores, dtype=np.float64)
        frame[f"decision:{model.name}"] = np.asarray(model.decisions, dtype=bool)
        frame[f"path:{model.name}"] = [str(p) for p in model.paths]
    found = [recorded.get(i) for i in event_ids]
    frame["recorded_score"] = np.array(
        [r["score"] if r else math.nan for r in found], dtype=np.float64
    )
    frame["recorded_decision"] = pd.Series(
        [r["decision"] if r else None for r in found], dtype=object
    )
    frame["recorded_version"] = pd.Series(
        [r["version"] if r else None for r in found], dtype=object
    )
    return frame
