"""A loopback KServe V2 server for the backtest's own models: artifacts scored in this process.

The backtest scores every model through `rtml.scoring.Scorer`, the live job's code: batched V2
requests with timeouts, retries and a circuit breaker, then the fallback model, then the rule. The
candidates are local folders the production model server does not (and must not) serve, so the
backtest serves them itself on 127.0.0.1 with a free port, for the length of the run: nothing is
published to the model repository and the production server gets no extra load.

It speaks what the scorer sends: ``POST /v2/models/{name}[/versions/{v}]/infer`` with one FP64
tensor ``[n, k]`` and answers ``predict_proba`` ``[n, classes]`` as MLServer's sklearn runtime
does (the same estimator call, so the same scores); ``GET /v2/health/ready``. HTTP/1.1 keep-alive,
Content-Length bodies only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from rtml.loopback_http import Answer, LoopbackJsonServer


@dataclass(frozen=True)
class ServedModel:
    """An estimator served under `name` (any version asked for answers with `version`)."""

    name: str
    version: str
    estimator: Any
    n_features: int


def infer(model: ServedModel, request: Mapping[str, Any]) -> dict[str, Any]:
    """The V2 answer to an infer request body (pure but for the estimator); ValueError if bad."""
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise ValueError("expected exactly one input tensor")
    tensor = inputs[0]
    shape = [int(d) for d in tensor.get("shape", [])]
    values = np.asarray(tensor.get("data"), dtype=np.float64)
    if len(shape) != 2 or values.size != shape[0] * shape[1] or shape[1] != model.n_features:
        raise ValueError(f"input shape {shape} does not fit [n, {model.n_features}]")
    rows = values.reshape(shape)
    if hasattr(model.estimator, "predict_proba"):
        output, scores = "predict_proba", np.asarray(model.estimator.predict_proba(rows))
    else:
        output, scores = "predict", np.asarray(model.estimator.predict(rows)).reshape(-1, 1)
    return {
        "model_name": model.name,
        "model_version": model.version,
        "outputs": [
            {
                "name": output,
                "shape": list(scores.shape),
                "datatype": "FP64",
                "data": scores.astype(np.float64).ravel().tolist(),
            }
        ],
    }


def route(path: str) -> tuple[str, str | None, str]:
    """('name', 'version' or None, 'infer'|'ready'|'') of a /v2/models/... path."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if len(parts) < 3 or parts[:2] != ["v2", "models"]:
        return "", None, ""
    name, rest = parts[2], parts[3:]
    version = None
    if len(rest) >= 2 and rest[0] == "versions":
        version, rest = rest[1], rest[2:]
    return name, version, rest[0] if rest else ""


class LocalV2Server(LoopbackJsonServer):
    """Serves `models` on 127.0.0.1 from an event loop thread of its own; a `with` block."""

    thread_name = "rtml-backtest-v2"

    def __init__(self, models: Mapping[str, ServedModel]) -> None:
        super().__init__()
        self.models = dict(models)

    async def handle(self, method: str, path: str, body: bytes) -> Answer:
        if path.startswith("/v2/health/"):
            return 200, {}
        name, _version, action = route(path)
        model = self.models.get(name)
        if model is None:
            return 404, {"error": f"model {name!r} not found"}
        if method == "POST" and action == "infer":
            try:
                return 200, infer(model, orjson.loads(body))
            except (ValueError, TypeError, KeyError) as error:
                return 400, {"error": str(error)[:300]}
            except Exception as error:  # noqa: BLE001 - the model raised: 500, as MLServer does
                return 500, {"error": f"{type(error).__name__}: {error}"[:300]}
        if action in ("ready", ""):
            return 200, {"name": model.name, "versions": [model.version], "platform": "sklearn"}
        return 404, {"error": f"no route {method} {path}"}
