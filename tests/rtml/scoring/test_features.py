"""Feature rows to a float matrix: missing, null, NaN and non-numeric values become NaN."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rtml.scoring.features import feature_matrix

NAMES = ("amount", "count", "ratio")


def test_dicts_in_feature_order_with_everything_missing_as_nan() -> None:
    rows = [
        {"count": 3, "amount": 12.5, "ratio": 0.25, "other": "ignored"},
        {"amount": None, "count": "three", "ratio": float("nan")},
        {"amount": float("inf"), "count": True},
    ]
    matrix = feature_matrix(rows, NAMES)
    np.testing.assert_array_equal(matrix.values[0], [12.5, 3.0, 0.25])
    assert np.isnan(matrix.values[1]).all()
    assert matrix.complete.tolist() == [True, False, False]
    assert matrix.missing(0) == []
    assert matrix.missing(1) == ["amount", "count", "ratio"]
    assert matrix.missing(2) == ["amount", "ratio"]  # inf is no usable number either


def test_dataframe_columns_by_name_missing_column_and_nullable_types() -> None:
    frame = pd.DataFrame(
        {
            "ratio": [0.5, None],
            "amount": pd.array([10, None], dtype="Int64"),
            "unused": ["x", "y"],
        }
    )
    matrix = feature_matrix(frame, NAMES)
    assert matrix.values.shape == (2, 3)
    np.testing.assert_array_equal(matrix.values[0, [0, 2]], [10.0, 0.5])
    assert matrix.missing(0) == ["count"]
    assert matrix.missing(1) == ["amount", "count", "ratio"]


def test_dataframe_object_column_is_coerced() -> None:
    frame = pd.DataFrame({"amount": ["1.5", "abc", None], "count": 1, "ratio": 2.0})
    matrix = feature_matrix(frame, NAMES)
    assert matrix.values[0].tolist() == [1.5, 1.0, 2.0]
    assert matrix.complete.tolist() == [True, False, False]


def test_arrays_pass_through_in_order_and_must_fit() -> None:
    values = np.array([[1, 2, 3]], dtype=np.int64)
    matrix = feature_matrix(values, NAMES)
    assert matrix.values.dtype == np.float64 and matrix.values.tolist() == [[1.0, 2.0, 3.0]]
    objects = np.array([[1, None, "x"]], dtype=object)
    assert feature_matrix(objects, NAMES).missing(0) == ["count", "ratio"]
    with pytest.raises(ValueError, match="shape"):
        feature_matrix(np.zeros((2, 2)), NAMES)


def test_empty_and_wrong_container_types() -> None:
    assert feature_matrix([], NAMES).values.shape == (0, 3)
    with pytest.raises(TypeError, match="many rows"):
        feature_matrix({"amount": 1}, NAMES)
    with pytest.raises(TypeError, match="row 1"):
        feature_matrix([{"amount": 1}, [1, 2, 3]], NAMES)
