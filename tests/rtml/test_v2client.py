"""Unit tests of the V2 client's pure parts: URLs, request bodies, response parsing."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import requests

from rtml import v2client
from rtml.v2client import V2Error


def test_model_path_quotes_segments() -> None:
    assert v2client.model_path("smoke") == "/v2/models/smoke"
    assert v2client.model_path("smoke", "2") == "/v2/models/smoke/versions/2"
    assert v2client.model_path("a b/c") == "/v2/models/a%20b%2Fc"


def test_build_infer_request_is_flat_fp64_with_shape() -> None:
    body = v2client.build_infer_request([[1, 2.5, 3], [4, 5, 6]])

    assert body == {
        "inputs": [
            {
                "name": "input-0",
                "shape": [2, 3],
                "datatype": "FP64",
                "data": [1.0, 2.5, 3.0, 4.0, 5.0, 6.0],
            }
        ],
        "outputs": [{"name": "predict_proba"}],
    }
    json.dumps(body)  # plain Python floats, no numpy scalars


def test_build_infer_request_without_output_lets_server_choose() -> None:
    assert "outputs" not in v2client.build_infer_request([[1.0]], output=None)


@pytest.mark.parametrize("rows", [[], [[1.0, 2.0], [3.0]], [1.0, 2.0]])
def test_build_infer_request_rejects_ragged_or_flat_rows(rows: list) -> None:
    with pytest.raises(ValueError):
        v2client.build_infer_request(rows)


def _response(*outputs: dict) -> dict:
    return {"model_name": "smoke", "model_version": "1", "id": "x", "outputs": list(outputs)}


def _tensor(name: str, shape: list[int], datatype: str, data: list) -> dict:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def test_encoded_infer_request_is_the_built_body_with_every_float_exact() -> None:
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(40, 7)) * 10.0 ** rng.integers(-300, 300, size=(40, 7))
    rows[0, :4] = [0.0, -0.0, 5e-324, 1.7976931348623157e308]  # zeros, subnormal, the largest
    rows[1, :3] = [0.1 + 0.2, 1 / 3, 123456789.123456789]  # long shortest representations
    for output in ("predict_proba", None):
        encoded = v2client.encode_infer_request(rows, output=output)
        built = v2client.build_infer_request(rows, output=output)
        assert json.loads(encoded) == built  # same body; every float equal to the last bit
        assert b" " not in encoded  # compact


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_encoded_infer_request_refuses_what_json_cannot_carry(bad: float) -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        v2client.encode_infer_request([[1.0, bad]])


@pytest.mark.parametrize("rows", [[], [1.0, 2.0]])
def test_encoded_infer_request_rejects_empty_or_flat_rows(rows: list) -> None:
    with pytest.raises(ValueError, match="non-empty list of equal-length rows"):
        v2client.encode_infer_request(rows)


def test_parse_infer_response_reshapes_named_output() -> None:
    body = _response(
        _tensor("predict", [2, 1], "INT64", [1, 0]),
        _tensor("predict_proba", [2, 2], "FP64", [0.1, 0.9, 0.8, 0.2]),
    )

    proba = v2client.parse_infer_response(body, "predict_proba")
    np.testing.assert_array_equal(proba, [[0.1, 0.9], [0.8, 0.2]])
    assert proba.dtype == np.float64
    assert v2client.parse_infer_response(body, "predict").dtype == np.int64


def test_parse_infer_response_accepts_nested_data_and_single_unnamed_choice() -> None:
    body = _response(_tensor("out", [1, 2], "FP32", [[0.5, 0.5]]))
    np.testing.assert_array_equal(v2client.parse_infer_response(body, None), [[0.5, 0.5]])


@pytest.mark.parametrize(
    "body, output, match",
    [
        ({"outputs": []}, "predict_proba", "no outputs"),
        (_response(_tensor("predict", [1], "FP64", [1])), "x", "not in"),
        (_response(_tensor("o", [1], "BYTES", ["a"])), "o", "datatype"),
        (_response(_tensor("o", [3], "FP64", [1, 2])), "o", "malformed"),
        (_response(_tensor("a", [1], "FP64", [1]), _tensor("b", [1], "FP64", [1])), None, "one"),
    ],
)
def test_parse_infer_response_errors(body: dict, output: str | None, match: str) -> None:
    with pytest.raises(V2Error, match=match):
        v2client.parse_infer_response(body, output)


def _http_response(status: int, content: bytes, reason: str = "Bad Request") -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = content
    response.reason = reason
    return response


def test_error_message_prefers_v2_error_field() -> None:
    assert v2client.error_message(_http_response(400, b'{"error": "bad shape"}')) == "bad shape"
    assert v2client.error_message(_http_response(500, b"boom\n")) == "boom"
    assert v2client.error_message(_http_response(502, b"", "Bad Gateway")) == "Bad Gateway"


def test_v2error_carries_status_and_message() -> None:
    err = V2Error(404, "Model smoke with version 9 not found")
    assert (err.status, err.message) == (404, "Model smoke with version 9 not found")
    assert "404" in str(err)


def test_health_checks_return_false_when_nothing_listens() -> None:
    # a port just released on loopback: connection refused at once, must not raise
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    assert v2client.server_live(url, timeout=0.5) is False
    assert v2client.server_ready(url, timeout=0.5) is False
    assert v2client.model_ready(url, "smoke", "1", timeout=0.5) is False


def test_infer_path_and_response_model_version() -> None:
    assert v2client.infer_path("a b", "2") == "/v2/models/a%20b/versions/2/infer"
    assert v2client.infer_path("smoke") == "/v2/models/smoke/infer"
    assert v2client.response_model_version({"model_version": "3", "outputs": []}) == "3"
    assert v2client.response_model_version({"model_version": 3}) == "3"
    assert v2client.response_model_version({"model_version": ""}) is None
    assert v2client.response_model_version({"outputs": []}) is None
