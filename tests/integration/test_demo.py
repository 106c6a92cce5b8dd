"""`rtml demo` on the real stack: the fraud pipeline from events to printed, flagged predictions.

The models are given (a small one published under a private name, and a fallback folder), so the
demo skips training (`tests/integration/test_train.py` covers `rtml train fraud`); the feature set
and topics are a private copy of fraud_card, so other tests' jobs and topics are left alone.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import pytest
import redis
import requests
from ephemeral import run_rtml
from integration.test_scoring_job import FEATURES, load_on_server, train

from rtml import model_repo
from rtml.flinkrest import FlinkRest
from rtml.online_store import feature_key
from rtml.stack import Stack

pytestmark = pytest.mark.integration

EVENTS = 800


def test_demo_scores_every_transaction_once_and_shows_flags_paths_and_where_to_look(
    stack: Stack, stack_env: dict[str, str], rest: FlinkRest, featureset: tuple, tmp_path: Path
) -> None:
    name, _, featureset_env = featureset
    model = f"it_demo_{uuid.uuid4().hex[:8]}"
    repo = stack.settings.model_repo
    fallback = model_repo.publish_sklearn_model(
        train(seed=2, c=1.0), tmp_path / "fallback", f"{model}-fallback", "1",
        feature_names=FEATURES,
    )  # fmt: skip
    env = {
        **stack_env, **featureset_env,
        "RTML_SCORING_MODEL": model,
        "RTML_SCORING_FALLBACK_MODEL": str(fallback),
        # generous: this test is about the pipeline, not about a loaded machine's timeouts
        "RTML_SCORING_REQUEST_TIMEOUT_MS": "2000",
        "RTML_SCORING_DEADLINE_MS": "5000",
    }  # fmt: skip
    try:
        model_repo.publish_sklearn_model(
            train(seed=1, c=1.0), repo, model, "1", feature_names=FEATURES
        )
        load_on_server(stack.settings.model_url, model, ["1"])
        shown = run_rtml(env, "demo", "--events", str(EVENTS), "--seed", "11", timeout=600)
        output = shown.stdout
        assert shown.returncode == 0, output + shown.stderr

        assert f"predictions: {EVENTS} of {EVENTS} transactions, 0 duplicates" in output, output
        paths = re.search(r"^paths: (.*); fallback rate (\d+\.\d)%$", output, re.M)
        assert paths, output
        counts = {p.split()[0]: int(p.split()[1]) for p in paths.group(1).split(", ")}
        assert sum(counts.values()) == EVENTS and counts.get("primary", 0) > 0, output
        assert float(paths.group(2)) == pytest.approx(100 * (1 - counts["primary"] / EVENTS), 0.1)
        flagged = int(re.search(r"^flagged: (\d+);", output, re.M).group(1))  # type: ignore[union-attr]
        table = output.split("highest scores first", 1)[1].split("look around:", 1)[0]
        rows = [line for line in table.splitlines()[2:] if line.strip()]
        assert (0 < len(rows) <= 8) if flagged else not rows, output
        for row in rows:  # flagged rows carry their features from the features topic
            assert re.match(r"\s+tx-11-\d+\s+card-\d+\s+[\d.]+\s+[01]\.\d{3}\s+\w+", row), row

        # the printed commands work: this run's records to backtest, the card's features in Redis
        offsets = re.search(r"--offsets (\S+)", output).group(1)  # type: ignore[union-attr]
        ranges = [re.fullmatch(r"(\d+):(\d+)-(\d+)", part) for part in offsets.split(",")]
        assert all(ranges) and sum(int(r[3]) - int(r[2]) for r in ranges) == EVENTS, offsets
        card = re.search(rf"rtml features get {name} (\S+)", output).group(1)  # type: ignore[union-attr]
        client = redis.Redis.from_url(stack.settings.redis_url)
        assert client.exists(feature_key(name, card)), output
        got = run_rtml(env, "features", "get", name, card)
        assert got.returncode == 0 and "tx_count_1m" in got.stdout, got.stdout + got.stderr
    finally:
        for job in rest.jobs():  # the demo leaves its jobs running, as a user wants it to
            if job.name in {f"rtml-features-{name}", f"rtml-scoring-{model}"}:
                rest.cancel(job.job_id)
        shutil.rmtree(repo / model, ignore_errors=True)
        requests.post(f"{stack.settings.model_url}/v2/repository/models/{model}/unload", timeout=30)
