"""Request bodies and answer checks of the async V2 client (pure parts)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rtml.scoring.retry import FailureKind
from rtml.scoring.settings import ScoringSettings
from rtml.scoring.v2 import RequestFailed, decode_response, encode_request, scores_from_output
from rtml.v2client import V2Error

SETTINGS = ScoringSettings("m", ("a", "b"))


def _answer(data: list, shape: list[int], name: str = "predict_proba") -> bytes:
    output = {"name": name, "shape": shape, "datatype": "FP64", "data": data}
    return json.dumps({"model_name": "m", "model_version": "7", "outputs": [output]}).encode()


def test_encode_request_is_compact_v2_json() -> None:
    body = json.loads(encode_request(np.array([[1.0, 2.0], [3.0, 4.5]]), SETTINGS))
    assert body["inputs"][0] == {
        "name": "input-0", "shape": [2, 2], "datatype": "FP64", "data": [1.0, 2.0, 3.0, 4.5],
    }  # fmt: skip
    assert body["outputs"] == [{"name": "predict_proba"}]


def test_encode_request_refuses_nan_rather_than_sending_invalid_json() -> None:
    with pytest.raises(ValueError):
        encode_request(np.array([[1.0, np.nan]]), SETTINGS)


def test_decode_picks_the_score_column_and_model_version() -> None:
    scores, version = decode_response(200, "OK", _answer([0.9, 0.1, 0.2, 0.8], [2, 2]), 2, SETTINGS)
    np.testing.assert_array_equal(scores, [0.1, 0.8])
    assert version == "7"


@pytest.mark.parametrize(
    "output, expected",
    [
        (np.array([0.3, 0.4]), [0.3, 0.4]),
        (np.array([[0.3], [0.4]]), [0.3, 0.4]),
        (np.array([[0.7, 0.3], [0.6, 0.4]]), [0.3, 0.4]),
        (np.array([1, 0], dtype=np.int64), [1.0, 0.0]),
    ],
)
def test_scores_from_output_shapes(output: np.ndarray, expected: list) -> None:
    assert scores_from_output(output, 2, 1).tolist() == expected


@pytest.mark.parametrize(
    "output, match",
    [
        (np.array([0.3]), "1 scores for 2 rows"),
        (np.array([[0.1, 0.2, 0.7]] * 3), "3 scores for 2 rows"),
        (np.zeros((2, 2, 2)), "no score column"),
        (np.array([0.3, np.nan]), "non-finite"),
    ],
)
def test_scores_from_output_rejects_wrong_shapes(output: np.ndarray, match: str) -> None:
    with pytest.raises(V2Error, match=match):
        scores_from_output(output, 2, 1)


@pytest.mark.parametrize(
    "status, body, kind, match",
    [
        (503, b'{"error": "overloaded"}', FailureKind.HTTP, "HTTP 503: overloaded"),
        (400, b"plain text", FailureKind.HTTP, "HTTP 400: plain text"),
        (502, b"", FailureKind.HTTP, "HTTP 502: Bad Gateway"),
        (200, b"<html>", FailureKind.SCHEMA, "not JSON"),
        (200, b"[1, 2]", FailureKind.SCHEMA, "not a JSON object"),
        (200, b'{"outputs": []}', FailureKind.SCHEMA, "no outputs"),
        (200, _answer([0.1, 0.9], [1, 2]), FailureKind.SCHEMA, "1 scores for 2 rows"),
        (200, _answer([1, 0], [2], "predict"), FailureKind.SCHEMA, "not in"),
    ],
)
def test_decode_failures(status: int, body: bytes, kind: FailureKind, match: str) -> None:
    with pytest.raises(RequestFailed, match=match) as caught:
        decode_response(status, "Bad Gateway", body, 2, SETTINGS)
    assert caught.value.failure.kind is kind
    assert caught.value.failure.status == (status if kind is FailureKind.HTTP else None)
