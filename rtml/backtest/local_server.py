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

import asyncio
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

_MAX_HEAD = 64 * 1024


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


class LocalV2Server:
    """Serves `models` on 127.0.0.1 from an event loop thread of its own; a `with` block."""

    def __init__(self, models: Mapping[str, ServedModel]) -> None:
        self.models = dict(models)
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LocalV2Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> LocalV2Server:
        loop = asyncio.new_event_loop()
        started = threading.Event()

        async def listen() -> None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            started.set()

        self._thread = threading.Thread(
            target=loop.run_forever, name="rtml-backtest-v2", daemon=True
        )
        self._thread.start()
        self._loop = loop
        asyncio.run_coroutine_threadsafe(listen(), loop).result(timeout=10)
        started.wait(10)
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def close() -> None:
            # Kept-alive connections are still being served: end them while the loop runs, or
            # their tasks die with the loop ("Task was destroyed but it is pending!").
            if self._server is not None:
                self._server.close()
            for task in self._connections:
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not loop.is_running():
            loop.close()
        self._loop = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                if len(head) > _MAX_HEAD:
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path = (lines[0].split(" ") + ["", ""])[:2]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                body = await reader.readexactly(length) if length else b""
                status, payload = self._handle(method, path, body)
                data = json.dumps(payload, separators=(",", ":")).encode()
                writer.write(
                    f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode(
                        "latin-1"
                    )
                    + data
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            # stop() ends kept-alive connections. Finish normally: Python 3.11's stream callback
            # calls task.exception() on a cancelled task and logs the CancelledError it raises.
            return
        finally:
            self._connections.discard(task)
            writer.close()

    def _handle(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if path.startswith("/v2/health/"):
            return 200, {}
        name, _version, action = route(path)
        model = self.models.get(name)
        if model is None:
            return 404, {"error": f"model {name!r} not found"}
        if method == "POST" and action == "infer":
            try:
                return 200, infer(model, json.loads(body))
            except (ValueError, TypeError, KeyError) as error:
                return 400, {"error": str(error)[:300]}
            except Exception as error:  # noqa: BLE001 - the model raised: 500, as MLServer does
                return 500, {"error": f"{type(error).__name__}: {error}"[:300]}
        if action in ("ready", ""):
            return 200, {"name": model.name, "versions": [model.version], "platform": "sklearn"}
        return 404, {"error": f"no route {method} {path}"}
