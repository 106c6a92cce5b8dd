"""A real V2 (Open Inference Protocol) HTTP server that misbehaves on request, for tests.

    python -m rtml.testing.v2_stub_server [--port 0] [--model smoke] [--version 1]

prints one JSON line ``{"url": "http://127.0.0.1:PORT", "pid": ...}`` once it listens, and serves
until SIGTERM/SIGINT. In-process: ``with StubV2Server(model="m") as stub: stub.url``.

Endpoints: ``GET /v2/health/live|ready``, ``GET /v2/models/{m}[/versions/{v}][/ready]``,
``POST /v2/models/{m}[/versions/{v}]/infer`` (one FP64/FP32/INT input [n, k]; the answer is
``predict_proba`` [n, 2] with ``p = stub_scores(rows)``, a deterministic function of the rows).
Unknown models or versions get 404.

Behaviour of the infer endpoint, switchable at runtime with ``POST /admin/behaviour`` (JSON) or
``StubV2Server.set_behaviour(...)``:

- ``{"mode": "healthy"}``                   answer at once (the default)
- ``{"mode": "sleep", "sleep_ms": 500}``    answer after that long
- ``{"mode": "error", "status": 503}``      answer with that HTTP status and a V2 error body
- ``{"mode": "wrong_schema", "schema": S}`` 200 with a bad body; S: ``wrong_rows`` (one score
  too few), ``no_outputs``, ``wrong_output`` (another output name), ``not_json``, ``nan``
- ``{"mode": "drop"}``                      read the request, close the connection unanswered
- ``"times": N`` with any mode: only the next N infer requests misbehave, then healthy again.

``GET /admin/stats`` returns ``{"infer_requests", "rows", "connections", "max_in_flight",
"behaviour"}``;
``POST /admin/reset`` sets healthy and zeroes the counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import threading
from dataclasses import asdict, dataclass, replace
from typing import Any
from urllib.parse import unquote

from rtml.loopback_http import Answer, LoopbackJsonServer

MODES = ("healthy", "sleep", "error", "wrong_schema", "drop")
SCHEMAS = ("wrong_rows", "no_outputs", "wrong_output", "not_json", "nan")


@dataclass(frozen=True)
class Behaviour:
    mode: str = "healthy"
    sleep_ms: float = 0.0
    status: int = 503
    schema: str = "wrong_rows"
    times: int | None = None  # None: until changed

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.schema not in SCHEMAS:
            raise ValueError(f"schema must be one of {SCHEMAS}, not {self.schema!r}")
        if not 100 <= int(self.status) <= 599 or self.sleep_ms < 0:
            raise ValueError("status must be an HTTP status, sleep_ms >= 0")
        if self.times is not None and self.times < 0:
            raise ValueError("times must be >= 0")


def stub_scores(rows: list[list[float]]) -> list[float]:
    """The healthy stub's score of each row: sigmoid(sum of the row's values)."""
    return [1.0 / (1.0 + math.exp(-max(-700.0, min(700.0, sum(row))))) for row in rows]


class StubV2Server(LoopbackJsonServer):
    """The server on 127.0.0.1, on its own event loop thread (start/stop, or a `with` block)."""

    thread_name = "v2-stub"

    def __init__(self, model: str = "smoke", version: str = "1", port: int = 0) -> None:
        super().__init__(port)
        self.model = model
        self.version = version
        self.behaviour = Behaviour()
        self.infer_requests = 0
        self.rows = 0
        self.connections = 0
        self.in_flight = 0  # infer requests being answered now
        self.max_in_flight = 0  # the most at once since the last reset
        self._lock = threading.Lock()

    def connection_opened(self) -> None:
        with self._lock:
            self.connections += 1

    def set_behaviour(self, **changes: Any) -> Behaviour:
        """Switch the infer endpoint's behaviour (fields of `Behaviour`; unnamed ones reset)."""
        behaviour = Behaviour(**changes)
        with self._lock:
            self.behaviour = behaviour
        return behaviour

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "infer_requests": self.infer_requests, "rows": self.rows,
                "connections": self.connections, "max_in_flight": self.max_in_flight,
                "behaviour": asdict(self.behaviour),
            }  # fmt: skip

    def reset(self) -> None:
        with self._lock:
            self.behaviour = Behaviour()
            self.infer_requests = self.rows = self.connections = self.max_in_flight = 0

    # -- HTTP ------------------------------------------------------------------------------------

    async def handle(self, method: str, path: str, body: bytes) -> Answer:
        parts = [unquote(p) for p in path.split("?")[0].strip("/").split("/")]
        if parts[:1] == ["admin"]:
            return self._admin(method, parts[1:], body)
        if parts[:2] == ["v2", "health"]:
            return 200, {"status": "ok"}
        if parts[:2] != ["v2", "models"] or len(parts) < 3:
            return 404, {"error": f"no route {method} {path}"}
        name, tail = parts[2], parts[3:]
        version = None
        if tail[:1] == ["versions"] and len(tail) >= 2:
            version, tail = tail[1], tail[2:]
        if name != self.model or version not in (None, self.version):
            return 404, {"error": f"Model {name} with version {version} not found"}
        if not tail:
            return 200, self._metadata()
        if tail == ["ready"]:
            return 200, {"name": name, "ready": True}
        if tail == ["infer"] and method == "POST":
            return await self._infer(body)
        return 404, {"error": f"no route {method} {path}"}

    def _admin(self, method: str, parts: list[str], body: bytes) -> tuple[int, Any]:
        if parts == ["behaviour"] and method == "POST":
            try:
                behaviour = self.set_behaviour(**json.loads(body or b"{}"))
            except (TypeError, ValueError) as error:
                return 400, {"error": str(error)}
            return 200, asdict(behaviour)
        if parts == ["stats"]:
            return 200, self.stats()
        if parts == ["reset"] and method == "POST":
            self.reset()
            return 200, self.stats()
        return 404, {"error": f"no admin route {parts}"}

    def _metadata(self) -> dict[str, Any]:
        return {
            "name": self.model, "versions": [self.version], "platform": "rtml-stub",
            "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, -1]}],
            "outputs": [{"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]}],
        }  # fmt: skip

    async def _infer(self, body: bytes) -> tuple[int, Any] | None:
        with self._lock:
            behaviour = self.behaviour
            if behaviour.times == 0:
                behaviour = self.behaviour = Behaviour()
            elif behaviour.times is not None:  # count down, then behave again
                remaining = behaviour.times - 1
                self.behaviour = replace(behaviour, times=remaining) if remaining else Behaviour()
            self.infer_requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(behaviour, body)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _answer(self, behaviour: Behaviour, body: bytes) -> tuple[int, Any] | None:
        try:
            rows = _decode_rows(json.loads(body))
        except (ValueError, KeyError, IndexError, TypeError) as error:
            return 400, {"error": f"bad infer request: {error!r}"}
        with self._lock:
            self.rows += len(rows)
        mode = behaviour.mode
        if mode == "sleep":
            await asyncio.sleep(behaviour.sleep_ms / 1000)
        elif mode == "error":
            return behaviour.status, {"error": f"stub told to answer {behaviour.status}"}
        elif mode == "drop":
            return None
        scores = stub_scores(rows)
        proba = [value for p in scores for value in (1.0 - p, p)]
        output = {"name": "predict_proba", "shape": [len(rows), 2], "datatype": "FP64",
                  "data": proba}  # fmt: skip
        if mode == "wrong_schema":
            schema = behaviour.schema
            if schema == "not_json":
                return 200, b"<html>surprise</html>"
            if schema == "no_outputs":
                return 200, {"model_name": self.model, "outputs": []}
            if schema == "wrong_output":
                output["name"] = "predict"
            elif schema == "wrong_rows":
                output.update(shape=[len(rows) - 1, 2], data=proba[2:])
            elif schema == "nan":  # NaN is not JSON, but Python's and many servers' writers emit it
                data = ", ".join(["NaN"] * len(proba))
                return 200, (
                    f'{{"outputs": [{{"name": "predict_proba", "shape": [{len(rows)}, 2], '
                    f'"datatype": "FP64", "data": [{data}]}}]}}'
                ).encode()
        return 200, {"model_name": self.model, "model_version": self.version, "id": "stub",
                     "parameters": {}, "outputs": [output]}  # fmt: skip


def _decode_rows(request: dict[str, Any]) -> list[list[float]]:
    tensor = request["inputs"][0]
    shape = [int(d) for d in tensor["shape"]]
    data = tensor["data"]
    flat: list[float] = []
    stack = [data]
    while stack:  # flatten nested lists, row-major
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(float(item))
    if len(shape) == 1:
        shape = [shape[0], 1]
    if len(shape) != 2 or shape[0] * shape[1] != len(flat) or shape[0] < 1:
        raise ValueError(f"shape {shape} does not fit {len(flat)} values")
    k = shape[1]
    return [flat[i * k : (i + 1) * k] for i in range(shape[0])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--model", default="smoke")
    parser.add_argument("--version", default="1")
    args = parser.parse_args(argv)
    stub = StubV2Server(args.model, args.version, args.port)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        serving = asyncio.ensure_future(stub.serve_forever())
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, serving.cancel)
        while not stub.serving():
            if serving.done():
                serving.result()
            await asyncio.sleep(0.01)
        print(json.dumps({"url": stub.url, "pid": os.getpid()}), flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await serving

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
