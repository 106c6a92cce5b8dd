"""Training-serving parity: the backtest's recomputed features against the live job's (pure).

For every evaluated event, each feature the backtest computed is compared with the record the live
feature job published for the same event id on the features topic. Counts, sums, distinct counts
and flags must be equal exactly; averages, standard deviations and ratios within a relative 1e-9
(they divide, so the last bits depend on the order of operations). A mismatch is a bug to fix:
the summary gives counts per column and up to `max_examples` examples.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

RELATIVE_TOLERANCE = 1e-9
# Float features that are quotients (or roots of them): compared within the tolerance.
_QUOTIENT = re.compile(r"(avg|mean|std|stddev|var|ratio|affinity|rate|_vs_|per_)", re.IGNORECASE)


def tolerance_for(column: str, dtype: object) -> float | None:
    """None (exact) for integers, booleans, strings and float sums/minima/maxima; the relative
    tolerance for float averages, deviations and ratios (pure)."""
    if pd.api.types.is_float_dtype(dtype) and _QUOTIENT.search(column):
        return RELATIVE_TOLERANCE
    return None


def _plain(value: Any) -> Any:
    """None for every kind of missing; numpy scalars as Python ones."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        value = value.item()
        if isinstance(value, float) and math.isnan(value):
            return None
    return value


def same(recomputed: Any, published: Any, tolerance: float | None) -> bool:
    """Whether two feature values agree (missing equals missing only) (pure)."""
    a, b = _plain(recomputed), _plain(published)
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        if tolerance is None:
            return float(a) == float(b)
        return math.isclose(float(a), float(b), rel_tol=tolerance, abs_tol=0.0)
    return a == b


def read_published(
    values: Iterable[bytes | None], event_ids: set[str], id_column: str
) -> tuple[dict[str, dict[str, Any]], int]:
    """(event id -> the live job's feature record, duplicates) for the events of `event_ids`."""
    found: dict[str, dict[str, Any]] = {}
    duplicates = 0
    for value in values:
        try:
            record = json.loads(value) if value is not None else None
            event_id = str(record[id_column])
        except (ValueError, TypeError, KeyError):
            continue
        if event_id in event_ids:
            duplicates += event_id in found
            found[event_id] = record
    return found, duplicates


def compare(
    recomputed: pd.DataFrame,
    published: Mapping[str, Mapping[str, Any]],
    *,
    id_column: str,
    columns: Sequence[str],
    max_examples: int = 20,
) -> dict[str, Any]:
    """The parity section of summary.json: events checked, missing on the topic, mismatches per
    column and examples. `columns` are the features compared (the query's, minus the id and the
    event-time attribute, whose text form differs on the topic)."""
    tolerances = {c: tolerance_for(c, recomputed[c].dtype) for c in columns}
    events = len(recomputed)
    base: dict[str, Any] = {
        "events": events,
        "tolerances": {
            c: "exact" if t is None else f"relative {t:g}" for c, t in tolerances.items()
        },
    }
    if not published:
        return {
            **base, "status": "skipped", "checked": 0, "missing_on_topic": events,
            "note": "the features topic holds none of the range's events (the live feature job "
            "did not run over this range, or its topic was deleted): parity not checked",
        }  # fmt: skip
    missing: list[str] = []
    per_column: dict[str, int] = {}
    examples: list[dict[str, Any]] = []
    mismatched_events = 0
    rows = recomputed[[id_column, *columns]].to_dict("records")
    for row in rows:
        event_id = str(row[id_column])
        record = published.get(event_id)
        if record is None:
            missing.append(event_id)
            continue
        bad = False
        for column in columns:
            theirs = record.get(column)
            if column in record and same(row[column], theirs, tolerances[column]):
                continue
            bad = True
            per_column[column] = per_column.get(column, 0) + 1
            if len(examples) < max_examples:
                examples.append(
                    {
                        "event_id": event_id,
                        "column": column,
                        "recomputed": _plain(row[column]),
                        "published": theirs if column in record else "(absent)",
                        "tolerance": base["tolerances"][column],
                    }
                )
        mismatched_events += bad
    checked = events - len(missing)
    return {
        **base,
        "status": "ok" if not mismatched_events and not missing else "mismatch",
        "checked": checked,
        "matching": checked - mismatched_events,
        "mismatched_events": mismatched_events,
        "mismatches_by_column": dict(sorted(per_column.items())),
        "examples": examples,
        "missing_on_topic": len(missing),
        "missing_examples": missing[:max_examples],
    }
