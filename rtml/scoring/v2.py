"""Async V2 inference for one sub-batch: request body and answer checks, failures classified."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from rtml import v2client
from rtml.scoring.http import ConnectError, HttpClient
from rtml.scoring.retry import Failure, FailureKind
from rtml.scoring.settings import ScoringSettings


class RequestFailed(Exception):
    """One V2 request did not produce usable scores; `failure` says why."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.describe())
        self.failure = failure


def encode_request(matrix: np.ndarray, settings: ScoringSettings) -> bytes:
    """The JSON body of a V2 infer request for the rows of `matrix` (pure); ValueError for NaN."""
    return v2client.encode_infer_request(matrix, output=settings.output)


def scores_from_output(output: np.ndarray, n_rows: int, score_column: int) -> np.ndarray:
    """One float score per row from a V2 output tensor, or V2Error if its shape or values are wrong.

    Accepts shape [n], [n, 1] (the score itself) or [n, k] (column `score_column`, e.g. the
    positive class of predict_proba). Every score must be finite.
    """
    if output.ndim == 2 and output.shape[1] == 1:
        output = output[:, 0]
    if output.ndim == 1:
        scores = output
    elif output.ndim == 2 and score_column < output.shape[1]:
        scores = output[:, score_column]
    else:
        raise v2client.V2Error(
            None, f"output shape {list(output.shape)} has no score column {score_column}"
        )
    if scores.shape[0] != n_rows:
        raise v2client.V2Error(None, f"{scores.shape[0]} scores for {n_rows} rows")
    scores = scores.astype(np.float64, copy=False)
    if not np.all(np.isfinite(scores)):
        raise v2client.V2Error(None, "non-finite scores in the answer")
    return scores


def decode_response(
    status: int, reason: str, body: bytes, n_rows: int, settings: ScoringSettings
) -> tuple[np.ndarray, str | None]:
    """(scores, model version) of an HTTP answer, or RequestFailed with the failure (pure)."""
    if status >= 400:
        detail = _error_text(body) or reason
        raise RequestFailed(Failure(FailureKind.HTTP, detail, status))
    try:
        payload: Any = json.loads(body)
        if not isinstance(payload, dict):
            raise v2client.V2Error(None, "response is not a JSON object")
        output = v2client.parse_infer_response(payload, settings.output)
        scores = scores_from_output(output, n_rows, settings.score_column)
    except (ValueError, v2client.V2Error) as error:  # JSONDecodeError is a ValueError
        message = error.message if isinstance(error, v2client.V2Error) else f"not JSON: {error}"
        raise RequestFailed(Failure(FailureKind.SCHEMA, message[:300])) from None
    return scores, v2client.response_model_version(payload)


class AsyncV2Client:
    """Sends sub-batches to one model of a V2 server over keep-alive connections."""

    def __init__(self, settings: ScoringSettings) -> None:
        self.settings = settings
        connect_ms = settings.connect_timeout_ms or settings.request_timeout_ms
        self.http = HttpClient(
            settings.base_url, max_idle=settings.max_in_flight, connect_timeout_s=connect_ms / 1000
        )
        self.path = v2client.infer_path(settings.model_name, settings.model_version)

    async def infer(self, matrix: np.ndarray) -> tuple[np.ndarray, str | None]:
        """Scores of the rows of `matrix` and the model version that answered.

        Raises RequestFailed for answers that cannot be used and for connection errors; the
        caller bounds the time (a timeout or cancellation drops the connection).
        """
        body = encode_request(matrix, self.settings)
        try:
            response = await self.http.post(self.path, body)
        except ConnectError as error:
            raise RequestFailed(Failure(FailureKind.CONNECT, str(error)[:300])) from None
        return decode_response(
            response.status, response.reason, response.body, matrix.shape[0], self.settings
        )

    def close(self) -> None:
        self.http.close()


def _error_text(body: bytes) -> str:
    try:
        payload = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:300]
    if isinstance(payload, dict) and "error" in payload:
        return str(payload["error"])[:300]
    return str(payload)[:300]
