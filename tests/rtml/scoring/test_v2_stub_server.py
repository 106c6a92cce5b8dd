"""The stub V2 server as a process: readiness, V2 routes, switching behaviour at runtime, kill."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests

from rtml import v2client
from rtml.testing.v2_stub_server import Behaviour, stub_scores


@pytest.fixture
def process() -> Iterator[tuple[subprocess.Popen, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtml.testing.v2_stub_server", "--model", "fraud", "--version", "4"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        yield proc, url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_speaks_v2_and_switches_behaviour_at_runtime(process: tuple) -> None:
    proc, url = process
    assert v2client.server_ready(url) and v2client.server_live(url)
    assert v2client.model_ready(url, "fraud") and v2client.model_ready(url, "fraud", "4")
    assert not v2client.model_ready(url, "fraud", "5")
    assert requests.get(f"{url}/v2/models/fraud", timeout=2).json()["versions"] == ["4"]

    rows = [[0.1, 0.2], [-3.0, 1.0]]
    proba = v2client.infer(url, "fraud", rows, version="4")
    assert proba[:, 1].tolist() == pytest.approx(stub_scores(rows))

    answer = requests.post(f"{url}/admin/behaviour", json={"mode": "error", "status": 502})
    assert answer.json()["status"] == 502
    with pytest.raises(v2client.V2Error) as caught:
        v2client.infer(url, "fraud", rows)
    assert caught.value.status == 502

    requests.post(f"{url}/admin/behaviour", json={"mode": "drop", "times": 1})
    with pytest.raises(requests.ConnectionError):
        v2client.infer(url, "fraud", rows)
    v2client.infer(url, "fraud", rows)  # healthy again after one

    stats = requests.get(f"{url}/admin/stats", timeout=2).json()
    assert stats["infer_requests"] == 4 and stats["behaviour"]["mode"] == "healthy"
    bad = requests.post(f"{url}/admin/behaviour", json={"mode": "explode"}, timeout=2)
    assert bad.status_code == 400 and "mode" in bad.json()["error"]

    proc.kill()
    proc.wait(timeout=10)
    assert not v2client.server_live(url, timeout=0.5)


def test_unknown_model_is_404_and_bad_request_is_400(process: tuple) -> None:
    _, url = process
    with pytest.raises(v2client.V2Error) as caught:
        v2client.infer(url, "nope", [[1.0]])
    assert caught.value.status == 404
    answer = requests.post(f"{url}/v2/models/fraud/infer", json={"inputs": []}, timeout=2)
    assert answer.status_code == 400


def test_behaviour_validation() -> None:
    for bad in ({"mode": "x"}, {"schema": "x"}, {"status": 99}, {"times": -1}):
        with pytest.raises(ValueError):
            Behaviour(**bad)
