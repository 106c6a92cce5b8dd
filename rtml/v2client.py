"""Minimal synchronous Open Inference Protocol (KServe V2) REST client.

Works against any V2 server (MLServer, KServe, Triton). Request building and
response parsing are pure functions so they can be tested without HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import numpy as np
import orjson
import requests

DEFAULT_INPUT_NAME = "input-0"

_V2_TO_NUMPY = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


class V2Error(Exception):
    """A V2 server answered with an HTTP error, or with a response we cannot use."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(f"V2 error {status}: {message}" if status else f"V2 error: {message}")
        self.status = status
        self.message = message


def model_path(name: str, version: str | None = None) -> str:
    """Return ``/v2/models/{name}[/versions/{version}]`` with segments URL-quoted."""
    path = f"/v2/models/{quote(name, safe='')}"
    if version is not None:
        path += f"/versions/{quote(version, safe='')}"
    return path


def build_infer_request(
    rows: Sequence[Sequence[float]],
    *,
    output: str | None = "predict_proba",
    input_name: str = DEFAULT_INPUT_NAME,
) -> dict[str, Any]:
    """Build a V2 infer request body: one FP64 tensor of shape ``[len(rows), n_features]``.

    Data is sent flat in row-major order, the form every V2 server accepts.
    ``output=None`` leaves the choice of outputs to the server.
    """
    x = _feature_matrix(rows)
    return _infer_body(list(x.shape), x.ravel().tolist(), output, input_name)


def encode_infer_request(
    rows: Sequence[Sequence[float]] | np.ndarray,
    *,
    output: str | None = "predict_proba",
    input_name: str = DEFAULT_INPUT_NAME,
) -> bytes:
    """`build_infer_request`'s body as compact JSON bytes; ValueError for NaN or infinities,
    which JSON cannot carry.

    orjson writes the float64 array itself, with the same shortest round-trip digits as
    ``json``: about 25x faster than ``json.dumps`` of its list (3 ms for 250 rows of 23
    features, most of the scorer's own time).
    """
    x = _feature_matrix(rows)
    if not np.isfinite(x).all():
        raise ValueError("NaN or infinite values cannot be sent as JSON")
    body = _infer_body(list(x.shape), x.ravel(), output, input_name)
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def _feature_matrix(rows: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(rows, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"rows must be a non-empty list of equal-length rows, got shape {x.shape}")
    return x


def _infer_body(shape: list[int], data: Any, output: str | None, input_name: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "inputs": [{"name": input_name, "shape": shape, "datatype": "FP64", "data": data}]
    }
    if output is not None:
        body["outputs"] = [{"name": output}]
    return body


def parse_infer_response(body: dict[str, Any], output: str | None = "predict_proba") -> np.ndarray:
    """Return the named output tensor of a V2 infer response as an array of its shape.

    With ``output=None`` the response must hold exactly one output.
    """
    outputs = body.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        raise V2Error(None, f"response has no outputs: {body!r:.200}")
    if output is None:
        if len(outputs) != 1:
            raise V2Error(None, f"expected one output, got {[o.get('name') for o in outputs]}")
        tensor = outputs[0]
    else:
        found = [o for o in outputs if o.get("name") == output]
        if not found:
            raise V2Error(None, f"output {output!r} not in {[o.get('name') for o in outputs]}")
        tensor = found[0]
    dtype = _V2_TO_NUMPY.get(tensor.get("datatype", ""))
    if dtype is None:
        raise V2Error(None, f"unsupported output datatype {tensor.get('datatype')!r}")
    try:
        return np.asarray(tensor["data"], dtype=dtype).reshape(tensor["shape"])
    except (KeyError, ValueError, TypeError) as exc:
        raise V2Error(None, f"malformed output tensor {output!r}: {exc}") from exc


def error_message(response: requests.Response) -> str:
    """Return the server's error text: V2's ``{"error": ...}`` if present, else the raw body."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return str(body)[:500]


def server_live(base_url: str, *, timeout: float = 2.0) -> bool:
    """Return True if ``GET /v2/health/live`` answers 200; False on any error."""
    return _ok(f"{base_url.rstrip('/')}/v2/health/live", timeout)


def server_ready(base_url: str, *, timeout: float = 2.0) -> bool:
    """Return True if ``GET /v2/health/ready`` answers 200; False on any error."""
    return _ok(f"{base_url.rstrip('/')}/v2/health/ready", timeout)


def model_ready(
    base_url: str, name: str, version: str | None = None, *, timeout: float = 2.0
) -> bool:
    """Return True if the model (version) ready endpoint answers 200; False on any error."""
    return _ok(f"{base_url.rstrip('/')}{model_path(name, version)}/ready", timeout)


def infer(
    base_url: str,
    name: str,
    rows: Sequence[Sequence[float]],
    *,
    version: str | None = None,
    output: str | None = "predict_proba",
    input_name: str = DEFAULT_INPUT_NAME,
    timeout: float = 10.0,
    session: requests.Session | None = None,
) -> np.ndarray:
    """Run one V2 inference and return the requested output as a numpy array.

    Pass a ``session`` to reuse connections across calls. Raises :class:`V2Error`
    on a 4xx/5xx answer or an unusable body; connection errors and timeouts
    propagate as ``requests`` exceptions.
    """
    url = f"{base_url.rstrip('/')}{model_path(name, version)}/infer"
    body = build_infer_request(rows, output=output, input_name=input_name)
    post = session.post if session is not None else requests.post
    response = post(url, json=body, timeout=timeout)
    if response.status_code >= 400:
        raise V2Error(response.status_code, error_message(response))
    try:
        payload = response.json()
    except ValueError as exc:
        raise V2Error(response.status_code, f"response is not JSON: {exc}") from exc
    return parse_infer_response(payload, output)


def _ok(url: str, timeout: float) -> bool:
    try:
        return requests.get(url, timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def infer_path(name: str, version: str | None = None) -> str:
    """Return the infer endpoint ``/v2/models/{name}[/versions/{version}]/infer``."""
    return f"{model_path(name, version)}/infer"


def response_model_version(body: dict[str, Any]) -> str | None:
    """The ``model_version`` a V2 infer response names (optional in the protocol), or None."""
    version = body.get("model_version") if isinstance(body, dict) else None
    return str(version) if version not in (None, "") else None
