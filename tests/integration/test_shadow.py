"""`rtml shadow` on the real stack: a candidate version scored live beside production on the same
private feature set, its predictions on the shadow topic only; `status` equals a computation
straight from the two topics; after `rtml models promote` production scores like the shadow."""

from __future__ import annotations

import json
import math
import shutil
import time
import uuid
from collections import Counter

import numpy as np
import pytest
import requests
from ephemeral import run_rtml, running_job
from integration.test_scoring_job import (
    FEATURES,
    START_MS,
    by_event,
    fraud,
    load_on_server,
    predictions,
    train,
)

from rtml import generate, model_repo
from rtml.backtest.metrics import psi
from rtml.flinkrest import FlinkRest
from rtml.generators import as_records
from rtml.stack import Stack

pytestmark = pytest.mark.integration


def status(env: dict[str, str], model: str, version: str, *args: str) -> dict:
    result = run_rtml(env, "shadow", "status", model, version, "--json", *args, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def direct(production: dict[str, dict], shadow: dict[str, dict], event_ids: list[str]) -> dict:
    """Agreement and score shift computed straight from the two topics' records."""
    p = np.array([production[e]["score"] for e in event_ids])
    s = np.array([shadow[e]["score"] for e in event_ids])
    same = [production[e]["decision"] == shadow[e]["decision"] for e in event_ids]
    return {
        "agreement": sum(same) / len(same),
        "mean": float((s - p).mean()),
        "mean_abs": float(np.abs(s - p).mean()),
        "psi": psi(s, p),
    }


def test_a_shadow_scores_every_event_beside_production_and_agrees_fully_once_promoted(
    stack: Stack, stack_env: dict[str, str], rest: FlinkRest, featureset: tuple
) -> None:
    _, definition, featureset_env = featureset
    env = {**stack_env, **featureset_env}
    bootstrap = stack.settings.kafka_bootstrap
    model = f"it_shadow_{uuid.uuid4().hex[:8]}"
    repo = stack.settings.model_repo
    versions = {"1": train(seed=1, c=1.0), "2": train(seed=1, c=0.001)}  # different scores
    source = definition["source"]["topic"]
    production_topic = featureset_env["RTML_SCORING_PREDICTIONS_TOPIC"]
    shadow_topic = f"rtml.shadow.{model}.v2"
    events = fraud.generate(400, seed=8, start_ms=START_MS, cards=40, rate=20.0)
    before, after = events[:250], events[250:]  # production scores with 1, then with 2
    assert max(e["ts"] for e in before) < min(e["ts"] for e in after)
    try:
        for version, estimator in versions.items():
            model_repo.publish_sklearn_model(
                estimator, repo, model, version, feature_names=FEATURES
            )
        load_on_server(stack.settings.model_url, model, list(versions))
        promoted = run_rtml(env, "models", "promote", model, "1")
        assert promoted.returncode == 0, promoted.stderr
        # a version the server does not serve is refused before anything is submitted
        refused = run_rtml(env, "shadow", "start", model, "3", "--detached", timeout=120)
        assert refused.returncode == 2, refused.stderr
        assert "is not published" in refused.stderr

        with running_job(env, rest, "scoring", model) as production_job:
            started = run_rtml(env, "shadow", "start", model, "2", "--detached", timeout=300)
            assert started.returncode == 0, started.stderr
            shadow_job = started.stdout.splitlines()[0]
            try:
                assert shadow_job != production_job
                rest.wait_for_state(shadow_job, {"RUNNING"}, timeout_s=120)
                names = {rest.job(shadow_job)["name"], rest.job(production_job)["name"]}
                assert names == {f"rtml-shadow-{model}-v2", f"rtml-scoring-{model}"}, names
                again = run_rtml(env, "shadow", "start", model, "2", "--detached", timeout=120)
                assert again.returncode == 2 and "already RUNNING" in again.stderr, again.stderr

                generate.produce(bootstrap, source, as_records(before, fraud.key_of))
                production = by_event(predictions(bootstrap, production_topic, 250), before)
                shadow = by_event(predictions(bootstrap, shadow_topic, 250), before)
                assert Counter(r["model_version"] for r in production.values()) == {
                    f"{model}/1": 250
                }
                assert Counter(r["model_version"] for r in shadow.values()) == {f"{model}/2": 250}
                summary = status(env, model, "2")
                want = direct(production, shadow, [e["event_id"] for e in before])
                assert summary["joined_total"] == summary["joined"] == 250, summary
                assert (summary["only_production"], summary["only_shadow"]) == (0, 0), summary
                assert summary["agreement"] == want["agreement"], (summary, want)
                assert math.isclose(summary["score_diff"]["mean"], want["mean"], abs_tol=1e-12)
                assert math.isclose(
                    summary["score_diff"]["mean_abs"], want["mean_abs"], abs_tol=1e-12
                )
                assert summary["score_diff"]["mean_abs"] > 0.01  # the versions do differ
                assert math.isclose(summary["psi"], want["psi"], abs_tol=1e-12)
                assert summary["production"]["paths"]["primary"] == 250
                assert summary["shadow"]["paths"]["primary"] == 250

                promoted = run_rtml(env, "models", "promote", model, "2")
                assert promoted.returncode == 0, promoted.stderr
                time.sleep(3)  # production's version follower polls every 200 ms
                generate.produce(bootstrap, source, as_records(after, fraud.key_of))
                production = by_event(predictions(bootstrap, production_topic, 400), events)
                shadow = by_event(predictions(bootstrap, shadow_topic, 400), events)
                # one prediction per event on each topic: the shadow wrote nothing to production's
                assert Counter(r["model_version"] for r in production.values()) == {
                    f"{model}/1": 250, f"{model}/2": 150,
                }  # fmt: skip
                assert all(
                    production[e["event_id"]]["model_version"] == f"{model}/2" for e in after
                )
                assert Counter(r["model_version"] for r in shadow.values()) == {f"{model}/2": 400}

                latest = status(env, model, "2", "--window", "150")  # the events after promotion
                assert (latest["joined"], latest["joined_total"]) == (150, 400), latest
                assert latest["production"]["model_versions"] == {f"{model}/2": 150}
                assert latest["agreement"] == 1.0, latest
                assert latest["score_diff"]["max_abs"] < 1e-9, latest
                overall = status(env, model, "2")
                want = direct(production, shadow, [e["event_id"] for e in events])
                assert overall["agreement"] == want["agreement"], (overall, want)
                assert math.isclose(overall["score_diff"]["mean"], want["mean"], abs_tol=1e-12)
                text = run_rtml(env, "shadow", "status", model, "2", "--window", "150")
                assert text.returncode == 0, text.stderr
                assert "agreement       100.00%  (150 of 150 decisions equal)" in text.stdout
            finally:
                stopped = run_rtml(env, "shadow", "stop", model, "2", timeout=180)
                assert stopped.returncode == 0, stopped.stderr
                assert "note:" not in stopped.stdout, stopped.stdout  # its consumer group deleted
            assert rest.job(shadow_job)["state"] == "CANCELED"
            assert rest.job(production_job)["state"] == "RUNNING"
    finally:
        shutil.rmtree(repo / model, ignore_errors=True)
        requests.post(f"{stack.settings.model_url}/v2/repository/models/{model}/unload", timeout=30)
