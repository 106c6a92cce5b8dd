"""Feature rows in, one float matrix out, with what each row is missing (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FeatureMatrix:
    """`values[i, j]` is feature j of row i as float64; NaN where missing or not a number."""

    values: np.ndarray
    feature_names: tuple[str, ...]

    @property
    def complete(self) -> np.ndarray:
        """Boolean mask of the rows with every feature present and finite."""
        return np.isfinite(self.values).all(axis=1)

    def missing(self, row: int) -> list[str]:
        """Names of the features row `row` lacks (missing, null, NaN, infinite or not numeric)."""
        bad = ~np.isfinite(self.values[row])
        return [name for name, flag in zip(self.feature_names, bad, strict=True) if flag]


def feature_matrix(rows: object, feature_names: Sequence[str]) -> FeatureMatrix:
    """The features of `rows` in `feature_names` order.

    `rows` is a pandas DataFrame (one column per feature; others ignored), a sequence of
    mappings, or a 2-D array already in feature order. A missing column or key, None, NaN,
    +-inf and values that are not numbers all become NaN: the fallback chain decides per path
    what a row with NaN gets, and says which features it lacked.
    """
    names = tuple(feature_names)
    if hasattr(rows, "columns") and hasattr(rows, "__len__"):  # a pandas DataFrame
        return FeatureMatrix(_from_frame(rows, names), names)
    if isinstance(rows, np.ndarray):
        if rows.ndim != 2 or rows.shape[1] != len(names):
            raise ValueError(f"a feature array must have shape [n, {len(names)}], not {rows.shape}")
        return FeatureMatrix(_as_float(rows), names)
    if isinstance(rows, Mapping | str | bytes):
        raise TypeError("score() takes many rows: a DataFrame, a list of dicts or a 2-D array")
    records = list(rows)  # type: ignore[call-overload]
    values = np.full((len(records), len(names)), np.nan)
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise TypeError(f"row {i} is a {type(record).__name__}, not a mapping of features")
        for j, name in enumerate(names):
            values[i, j] = _number(record.get(name))
    return FeatureMatrix(values, names)


def _from_frame(frame: Any, names: tuple[str, ...]) -> np.ndarray:
    import pandas as pd  # lazy: only DataFrame callers pay for it

    values = np.full((len(frame), len(names)), np.nan)
    for j, name in enumerate(names):
        if name in frame.columns:
            column = frame[name]
            if not pd.api.types.is_numeric_dtype(column):
                column = pd.to_numeric(column, errors="coerce")  # strings, objects -> NaN
            values[:, j] = column.to_numpy(dtype=np.float64, na_value=np.nan)
    return values


def _as_float(array: np.ndarray) -> np.ndarray:
    try:
        return array.astype(np.float64)
    except (TypeError, ValueError):
        return np.vectorize(_number, otypes=[np.float64])(array)


def _number(value: object) -> float:
    if value is None or isinstance(value, str | bytes):
        return np.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return np.nan
