"""Rows/s through `Scorer.score` against the real MLServer, for a few sub-batch sizes and in-flight
bounds, side by side with plain synchronous calls (`requests`) doing the same work.

    .venv/bin/python -m bench.scorer [--url http://127.0.0.1:8080] [--batches 30]
                                     [--out bench/results/scorer.json]

Without --url it starts a model server of its own (only that service of a throw-away stack, on
free loopback ports) serving the `smoke` model (LogisticRegression, 3 features) and stops it at
the end. Each `score()` call gets 1000 rows, the size of a Flink Arrow batch. Also measured: the
transport alone, one-row requests one after another (requests.Session vs rtml's asyncio client).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from rtml import model_repo, v2client
from rtml.scoring import ScorePath, Scorer, ScoringSettings
from rtml.scoring.http import HttpClient
from rtml.settings import ephemeral_stack_settings
from rtml.stack import Stack

ROWS_PER_CALL = 1000


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def transport(url: str, requests_n: int) -> dict:
    body = v2client.build_infer_request([[0.1, 0.2, 0.3]])
    path = v2client.infer_path("smoke")
    session = requests.Session()
    session.post(url + path, json=body, timeout=5).raise_for_status()
    started = time.perf_counter()
    for _ in range(requests_n):
        session.post(url + path, json=body, timeout=5).raise_for_status()
    sync_rate = requests_n / (time.perf_counter() - started)

    async def run_async() -> float:
        client = HttpClient(url)
        raw = json.dumps(body).encode()
        await client.post(path, raw)
        begin = time.perf_counter()
        for _ in range(requests_n):
            assert (await client.post(path, raw)).status == 200
        client.close()
        return requests_n / (time.perf_counter() - begin)

    return {
        "requests": requests_n,
        "requests_session_per_s": round(sync_rate),
        "rtml_asyncio_client_per_s": round(asyncio.run(run_async())),
    }


def scorer_run(url: str, sub_batch: int, in_flight: int, batches: list[np.ndarray]) -> dict:
    settings = ScoringSettings(
        "smoke", tuple(model_repo.SMOKE_FEATURES), base_url=url, sub_batch_size=sub_batch,
        max_in_flight=in_flight, request_timeout_ms=1000, deadline_ms=2000,
    )  # fmt: skip
    with Scorer(settings) as scorer:
        scorer.score(batches[0])  # connect, warm up
        scorer.drain_samples()
        calls: list[float] = []
        started = time.perf_counter()
        for batch in batches:
            begin = time.perf_counter()
            predictions = scorer.score(batch)
            calls.append((time.perf_counter() - begin) * 1000)
            assert all(p.path is ScorePath.PRIMARY for p in predictions), predictions[0].error
        elapsed = time.perf_counter() - started
        request_ms, _ = scorer.drain_samples()
    return {
        "sub_batch_size": sub_batch, "max_in_flight": in_flight,
        "rows_per_s": round(len(batches) * ROWS_PER_CALL / elapsed),
        "score_call_ms_p50": round(statistics.median(calls), 2),
        "score_call_ms_p99": round(_percentile(calls, 99), 2),
        "request_ms_p50": round(_percentile(request_ms, 50), 2),
        "request_ms_p99": round(_percentile(request_ms, 99), 2),
    }  # fmt: skip


def sync_run(url: str, sub_batch: int, batches: list[np.ndarray]) -> dict:
    session = requests.Session()
    v2client.infer(url, "smoke", batches[0][:sub_batch], session=session)
    started = time.perf_counter()
    for batch in batches:
        for i in range(0, len(batch), sub_batch):
            v2client.infer(url, "smoke", batch[i : i + sub_batch], session=session)
    elapsed = time.perf_counter() - started
    return {
        "sub_batch_size": sub_batch,
        "rows_per_s": round(len(batches) * ROWS_PER_CALL / elapsed),
    }


def measure(url: str, n_batches: int) -> dict:
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(ROWS_PER_CALL, 3)) for _ in range(n_batches)]
    results: dict = {"transport_one_row_sequential": transport(url, 500)}
    results["scorer"] = [
        scorer_run(url, sub_batch, in_flight, batches)
        for sub_batch in (100, 250, 1000)
        for in_flight in (1, 2, 4)
    ]
    results["sync_requests_loop"] = [sync_run(url, size, batches) for size in (100, 250, 1000)]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running V2 server with the smoke model")
    parser.add_argument("--batches", type=int, default=30, help="score() calls of 1000 rows each")
    parser.add_argument("--out", type=Path, default=Path("bench/results/scorer.json"))
    args = parser.parse_args()
    stack = None
    url = args.url
    if url is None:
        stack = Stack(ephemeral_stack_settings(Path(tempfile.mkdtemp(prefix="rtml-bench-"))))
        stack.up(only=["model-server"])
        url = stack.settings.model_url
    try:
        results = measure(url, args.batches)
    finally:
        if stack is not None:
            stack.down()
    report = {
        "what": "rows/s through Scorer.score (1000 rows per call) against MLServer, smoke model",
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "rows_per_call": ROWS_PER_CALL, "calls": args.batches, **results,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
