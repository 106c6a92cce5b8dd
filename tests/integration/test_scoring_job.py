"""The fraud scoring job on the real stack: one prediction per event, exactly-once, scored by the
real model server like the model itself; fallbacks while the server stalls or fails; a promoted
version takes over without a restart."""

from __future__ import annotations

import json
import math
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import requests
from ephemeral import SETTLE_S, crash_taskmanager, run_rtml, running_job, wait_for_checkpoint_after
from integration.test_features_job import expected_card_features
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from rtml import generate, model_repo, v2client
from rtml.flinkrest import FlinkRest
from rtml.generators import GENERATORS, as_records
from rtml.kafka_io import read_committed
from rtml.stack import Stack
from rtml.testing.v2_stub_server import StubV2Server, stub_scores

pytestmark = pytest.mark.integration

START_MS = 1_763_700_000_000
# fraud_card columns the test models read (booleans become 0/1, as the scorer sends them)
FEATURES = [
    "amount", "tx_count_1m", "tx_count_5m", "tx_count_1h", "amount_sum_5m", "amount_avg_24h",
    "amount_vs_avg_24h", "merchants_5m", "countries_24h", "ips_24h", "devices_24h",
    "country_new_24h", "device_new_24h",
]  # fmt: skip
fraud = GENERATORS["fraud"]


def feature_vectors(events: list[dict]) -> dict[str, list[float]]:
    """Per event id, FEATURES as floats, computed directly from the events (the feature test's
    own reference computation)."""
    return {
        event_id: [float(row[name]) for name in FEATURES]
        for event_id, row in expected_card_features(events).items()
    }


def train(seed: int, c: float) -> object:
    """A small model fit on generated, labelled transactions' features (different C: different
    scores, so the version that scored is visible in the score)."""
    events = fraud.generate(400, seed=seed, start_ms=START_MS, cards=20, rate=20.0)
    vectors = feature_vectors(events)
    x = np.array([vectors[e["event_id"]] for e in events])
    y = np.array([bool(e["is_fraud"]) for e in events])
    if y.all() or not y.any():  # a model needs both classes
        y[: len(y) // 2] = ~y[: len(y) // 2]
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(x, y)


def load_on_server(base_url: str, name: str, versions: list[str]) -> None:
    """Make the running MLServer (re)load `name` from its repository; wait for `versions`."""
    response = requests.post(f"{base_url}/v2/repository/models/{name}/load", timeout=120)
    assert response.status_code < 400, response.text
    deadline = time.monotonic() + 120
    while not all(v2client.model_ready(base_url, name, v) for v in versions):
        assert time.monotonic() < deadline, f"{name} {versions} not ready"
        time.sleep(0.5)


def predictions(bootstrap: str, topic: str, count: int, settle_s: float = 3) -> list[dict]:
    """The committed predictions, read until `count` arrived (and `settle_s` more, so
    duplicates would be seen too)."""
    records = read_committed(
        bootstrap, topic, until=lambda rs: len(rs) >= count, timeout_s=180, settle_s=settle_s
    )
    rows = []
    for record in records:
        row = json.loads(record.value)
        assert record.key.decode() == row["entity"]  # keyed by card: a card's order is kept
        rows.append(row)
    return rows


def by_event(rows: list[dict], events: list[dict]) -> dict[str, dict]:
    """Exactly one prediction per event, no other."""
    counts = Counter(row["event_id"] for row in rows)
    duplicated = {event_id: n for event_id, n in counts.items() if n > 1}
    assert not duplicated, duplicated
    assert set(counts) == {e["event_id"] for e in events}
    return {row["event_id"]: row for row in rows}


def scoring_metrics(rest: FlinkRest, job_id: str) -> dict[str, int]:
    """The UDF's rtml_scoring metrics, summed over subtasks (breaker_state: the max)."""
    totals: dict[str, int] = {}
    for vertex in rest.job(job_id).get("vertices", []):
        ours = rest.matching_vertex_metrics(job_id, vertex["id"], lambda m: ".rtml_scoring." in m)
        for metric, value in ours.items():
            name = metric.rsplit(".rtml_scoring.", 1)[1]
            if name == "breaker_state":
                totals[name] = max(totals.get(name, 0), int(float(value)))
            elif value.replace(".", "", 1).isdigit():
                totals[name] = totals.get(name, 0) + int(float(value))
    return totals


def wait_for_metrics(
    rest: FlinkRest, job_id: str, ok: object, timeout_s: float = 60
) -> dict[str, int]:
    """Poll the metrics until `ok(metrics)` holds.

    The JobManager answers from its last fetch and starts the next one (at most every 10 s) only
    when asked: after a quiet spell, the first answer is as old as the spell (in this module's
    breaker test under load, it still showed the stalled phase, four phases back). So wait for
    every value a test asserts. (A CI run once saw all 800 rows but no `breaker_probes`: most
    likely values from a newer fetch than the names, which `matching_vertex_metrics` now rules
    out.)
    """
    deadline = time.monotonic() + timeout_s
    metrics = scoring_metrics(rest, job_id)
    while not ok(metrics) and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(1.0)
        metrics = scoring_metrics(rest, job_id)
    return metrics


def restarts(rest: FlinkRest, job_id: str) -> int:
    """Restarts of the job, read at once from its exception history.

    (The `numRestarts` metric comes through the JobManager's metric fetcher, up to 10 s late,
    and answered 0 right after two restarts.)
    """
    history = rest._call("GET", f"/jobs/{job_id}/exceptions")["exceptionHistory"]
    return len(history["entries"])


def test_predictions_are_exactly_once_like_the_model_and_follow_a_promoted_version(
    stack: Stack, stack_env: dict[str, str], rest: FlinkRest, featureset: tuple, tmp_path: Path
) -> None:
    name, definition, featureset_env = featureset
    env = {**stack_env, **featureset_env}
    bootstrap = stack.settings.kafka_bootstrap
    model = f"it_fraud_{uuid.uuid4().hex[:8]}"
    repo = stack.settings.model_repo
    versions = {"1": train(seed=1, c=1.0), "2": train(seed=1, c=0.001)}
    # Each version decides with its own threshold, carried by its promotion: the job starts
    # with the newest's (2) but scores with the promoted 1 first.
    thresholds = {"1": 0.6, "2": 0.3}
    try:
        for version, estimator in versions.items():
            model_repo.publish_sklearn_model(
                estimator, repo, model, version, feature_names=FEATURES,
                threshold=thresholds[version],
            )  # fmt: skip
        load_on_server(stack.settings.model_url, model, list(versions))
        promoted = run_rtml(env, "models", "promote", model, "1")
        assert promoted.returncode == 0, promoted.stderr

        events = fraud.generate(600, seed=5, start_ms=START_MS, cards=40, rate=20.0)
        vectors = feature_vectors(events)
        halves = events[:300], events[300:]
        topic = definition["source"]["topic"]
        out = featureset_env["RTML_SCORING_PREDICTIONS_TOPIC"]
        with running_job(env, rest, "scoring", model) as job_id:
            seen = 0
            for version, half in zip(versions, halves, strict=True):
                if version == "2":  # promoted while the job runs: later events get version 2
                    promoted = run_rtml(env, "models", "promote", model, "2")
                    assert promoted.returncode == 0, promoted.stderr
                    time.sleep(3)  # the UDF's follower polls the topic every 200 ms
                generate.produce(bootstrap, topic, as_records(half, fraud.key_of))
                seen += len(half)
                rows = by_event(predictions(bootstrap, out, seen), events[:seen])
                estimator = versions[version]
                x = np.array([vectors[e["event_id"]] for e in half])
                want = estimator.predict_proba(x)[:, 1]
                for event, score in zip(half, want, strict=True):
                    got = rows[event["event_id"]]
                    where = (event["event_id"], got)
                    assert got["path"] == "primary", where
                    assert got["model_version"] == f"{model}/{version}", where
                    assert math.isclose(got["score"], score, rel_tol=1e-9, abs_tol=1e-12), where
                    assert got["decision"] == (got["score"] >= thresholds[version]), where
                    assert got["entity"] == event["card_id"], where
                    assert got["feature_snapshot_id"] == f"{name}/v2/{event['event_id']}", where
                    assert got["error"] is None, where
                    assert got["latency_ms"] >= 0, where
                    event_ms = np.datetime64(got["event_time"].rstrip("Z"), "ms").astype(int)
                    assert event_ms == event["ts"], where
            assert rest.wait_for_state(job_id, {"RUNNING"}) == "RUNNING"
            assert restarts(rest, job_id) == 0
            metrics = wait_for_metrics(rest, job_id, lambda m: m.get("primary") == len(events))
            assert metrics["primary"] == metrics["rows"] == len(events), metrics
            assert metrics["requests"] >= 2 and metrics["breaker_state"] == 0, metrics
    finally:
        shutil.rmtree(repo / model, ignore_errors=True)
        requests.post(f"{stack.settings.model_url}/v2/repository/models/{model}/unload", timeout=30)


def test_a_stalled_or_failing_server_gets_fallbacks_and_the_breaker_opens_and_closes(
    stack: Stack, stack_env: dict[str, str], rest: FlinkRest, featureset: tuple, tmp_path: Path
) -> None:
    name, definition, featureset_env = featureset
    bootstrap = stack.settings.kafka_bootstrap
    repo = tmp_path / "models"
    model = "stubbed"
    primary = model_repo.publish_sklearn_model(
        train(seed=1, c=1.0), repo, model, "1", feature_names=FEATURES
    )
    fallback = model_repo.publish_sklearn_model(
        train(seed=2, c=1.0), repo, "fraud-fallback", "1", feature_names=FEATURES
    )
    # Wide enough that a healthy answer on a loaded 2-core CI machine is never late; the stalled
    # phase sleeps 5 s, far past both.
    deadline_ms = 500
    with StubV2Server(model=model, version="1") as stub:
        env = {
            **stack_env, **featureset_env,
            "RTML_MODEL_URL": stub.url,
            "RTML_SCORING_MODEL_REPO": str(repo),
            "RTML_SCORING_FALLBACK_MODEL": str(fallback),
            "RTML_SCORING_FOLLOW_VERSIONS": "false",
            "RTML_SCORING_REQUEST_TIMEOUT_MS": "250",
            "RTML_SCORING_DEADLINE_MS": str(deadline_ms),
            "RTML_SCORING_BREAKER_FAILURE_THRESHOLD": "3",
            "RTML_SCORING_BREAKER_COOLDOWN_MS": "1000",
            # a batch of the stalled phase is several requests, enough to open the breaker
            "RTML_SCORING_SUB_BATCH_SIZE": "20",
        }  # fmt: skip
        assert primary.name == "1"
        events = fraud.generate(800, seed=6, start_ms=START_MS, cards=40, rate=20.0)
        phases = [
            ("healthy", 100), ("sleep", 200), ("error", 200), ("wrong_schema", 100),
            ("probe", 50), ("after", 150),
        ]  # fmt: skip
        # why the server did not answer, as the predictions' error says (or "breaker open")
        causes = {"sleep": "timeout", "error": "HTTP 503", "wrong_schema": "schema: "}
        topic = definition["source"]["topic"]
        out = featureset_env["RTML_SCORING_PREDICTIONS_TOPIC"]
        with running_job(env, rest, "scoring", model) as job_id:
            seen = 0
            for phase, count in phases:
                if phase == "sleep":
                    stub.set_behaviour(mode="sleep", sleep_ms=5000)
                elif phase == "error":
                    stub.set_behaviour(mode="error", status=503)
                elif phase == "wrong_schema":  # 200 with one score too few
                    stub.set_behaviour(mode="wrong_schema", schema="wrong_rows")
                elif phase == "probe":
                    stub.reset()
                    time.sleep(1.5)  # past the breaker's cool-down: the next request probes
                part = events[seen : seen + count]
                generate.produce(bootstrap, topic, as_records(part, fraud.key_of))
                seen += count
                rows = by_event(predictions(bootstrap, out, seen, settle_s=1), events[:seen])
                got = [rows[e["event_id"]] for e in part]
                paths = Counter(row["path"] for row in got)
                if phase == "probe":
                    # the first sub-batch probes the half-open breaker in the background and
                    # falls back, as do the others until the probe's answer closes the breaker
                    why = Counter(row["error"] for row in got if row["path"] != "primary")
                    assert set(paths) <= {"primary", "fallback_model"}, (phase, paths)
                    assert set(why) <= {
                        "primary: breaker half-open: this batch probes the server in the "
                        "background",
                        "primary: breaker open",
                    }, (phase, why.most_common(5))
                    assert any("half-open" in error for error in why), (phase, why)
                elif phase in ("healthy", "after"):
                    why = Counter(row["error"] for row in got if row["path"] != "primary")
                    assert paths == {"primary": count}, (phase, paths, why.most_common(5))
                    assert {row["model_version"] for row in got} == {f"{model}/1"}
                elif phase in causes:
                    # every row answered by the local fallback model, within the deadline
                    assert paths == {"fallback_model": count}, (phase, paths)
                    assert {row["model_version"] for row in got} == {"fraud-fallback/1"}
                    slowest = max(row["latency_ms"] for row in got)
                    assert slowest < deadline_ms + 250, (phase, slowest)
                    cause = causes[phase]
                    unexplained = [
                        row["error"] for row in got
                        if not (
                            "breaker open" in row["error"]
                            or "breaker half-open" in row["error"]
                            or cause in row["error"]
                        )
                    ]  # fmt: skip
                    assert not unexplained, (phase, unexplained[:3])
                    # the breaker acted in this phase: it refused rows, or one batch probed
                    breaker = [row["error"] for row in got if "breaker" in row["error"]]
                    assert breaker, (phase, Counter(row["error"] for row in got).most_common(3))
                    if phase == "sleep":  # closed before: it opens within the phase's batches
                        metrics = wait_for_metrics(
                            rest,
                            job_id,
                            lambda m: m.get("breaker_opened", 0) >= 1 and m.get("timeouts", 0) >= 1,
                        )
                        assert metrics.get("breaker_opened", 0) >= 1, (phase, metrics)
                        assert metrics.get("timeouts", 0) >= 1, metrics

            # Opened in each failing phase. Later phases start half-open, and a failed probe
            # opens it again after its batch: Flink's counters hear of it with the next batch.
            # PyFlink reports a counter once it has been incremented: absent means 0.
            def settled(m: dict[str, int]) -> bool:
                return (
                    m.get("rows") == len(events) and m["breaker_state"] == 0
                    and m.get("breaker_probes", 0) >= 1 and m.get("breaker_opened", 0) >= 3
                )  # fmt: skip

            metrics = wait_for_metrics(rest, job_id, settled)
            # the whole dict, as a string: pytest cuts a dict's repr at a few keys
            shown = json.dumps({**metrics, "restarts": restarts(rest, job_id)}, sort_keys=True)
            assert metrics["breaker_state"] == 0, shown  # closed again
            assert metrics.get("breaker_probes", 0) >= 1, shown
            assert metrics.get("breaker_opened", 0) >= 3, shown
            assert metrics["rows"] == len(events), shown
            assert metrics["fallback_model"] >= 500 and metrics.get("default", 0) == 0, shown
            assert rest.wait_for_state(job_id, {"RUNNING"}) == "RUNNING"
            assert restarts(rest, job_id) == 0


def test_killed_taskmanagers_lose_and_duplicate_no_prediction(
    stack: Stack, stack_env: dict[str, str], rest: FlinkRest, featureset: tuple, tmp_path: Path
) -> None:
    _, definition, featureset_env = featureset
    bootstrap = stack.settings.kafka_bootstrap
    repo = tmp_path / "models"
    model = "stubbed"
    model_repo.publish_sklearn_model(train(seed=1, c=1.0), repo, model, "1", feature_names=FEATURES)
    events = fraud.generate(1500, seed=7, start_ms=START_MS, cards=40, rate=20.0)
    parts = [events[i : i + 300] for i in range(0, len(events), 300)]  # 1 + 2 per kill
    topic = definition["source"]["topic"]
    out = featureset_env["RTML_SCORING_PREDICTIONS_TOPIC"]
    with StubV2Server(model=model, version="1") as stub:
        env = {
            **stack_env, **featureset_env, "RTML_MODEL_URL": stub.url,
            "RTML_SCORING_MODEL_REPO": str(repo), "RTML_SCORING_FOLLOW_VERSIONS": "false",
        }  # fmt: skip
        try:
            with running_job(env, rest, "scoring", model) as job_id:
                generate.produce(bootstrap, topic, as_records(parts[0], fraud.key_of))
                sent = 300
                for kill in range(2):
                    # committed so far, then more events in flight when the TaskManager dies
                    wait_for_checkpoint_after(rest, job_id, int(time.time() * 1000))
                    generate.produce(
                        bootstrap, topic, as_records(parts[1 + 2 * kill], fraud.key_of)
                    )
                    killed_at = crash_taskmanager(stack)
                    # events keep arriving while the job is down; a new TaskManager starts
                    generate.produce(
                        bootstrap, topic, as_records(parts[2 + 2 * kill], fraud.key_of)
                    )
                    sent += 600
                    assert stack.up(["flink-taskmanager"]) == ["flink-taskmanager"]
                    rows = predictions(bootstrap, out, sent, settle_s=SETTLE_S)
                    recovered_s = time.monotonic() - killed_at
                    by_event(rows, events[:sent])  # none lost, none twice (read_committed)
                    assert {row["path"] for row in rows} == {"primary"}
                    print(
                        f"kill -9 #{kill + 1}: all predictions committed {recovered_s:.1f} s later"
                    )
                assert rest.wait_for_state(job_id, {"RUNNING"}) == "RUNNING"
                assert restarts(rest, job_id) >= 2
        finally:
            stack.up(["flink-taskmanager"])  # leave a TaskManager for the tests after this one


def bad_transactions(template: list[dict], ts: int) -> tuple[list[dict], list[dict]]:
    """Valid transactions at `ts` whose features the model cannot take, each on a card of its
    own: no country and no device (the "new in 24 h" flags are NULL); amount 0 on a fresh card
    (the amount relative to the card's 24 h average is 0 / 0 = NaN)."""
    unknown_place, zero_amount = [], []
    for i, event in enumerate(template):
        event = {**event, "ts": ts}  # not behind the watermark: late events are dead letters
        missing = {k: v for k, v in event.items() if k not in ("country", "device_id")}
        unknown_place.append({**missing, "event_id": f"bad-place-{i}", "card_id": f"c-place-{i}"})
        zero_amount.append(
            {**event, "event_id": f"bad-zero-{i}", "card_id": f"c-zero-{i}", "amount": 0}
        )
    return unknown_place, zero_amount


def test_rows_the_model_cannot_take_get_a_fallback_with_the_missing_features_named(
    stack: Stack, stack_env: dict[str, str], rest: FlinkRest, featureset: tuple, tmp_path: Path
) -> None:
    _, definition, featureset_env = featureset
    bootstrap = stack.settings.kafka_bootstrap
    repo = tmp_path / "models"
    model = "stubbed"
    model_repo.publish_sklearn_model(train(seed=1, c=1.0), repo, model, "1", feature_names=FEATURES)
    # a fallback that takes NaN itself, so its score of a bad row can be checked exactly
    training = fraud.generate(400, seed=2, start_ms=START_MS, cards=20, rate=20.0)
    vectors = feature_vectors(training)
    nan_tolerant = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(
        np.array([vectors[e["event_id"]] for e in training]),
        np.arange(len(training)) % 2 == 0,  # any two classes do: only its scores are compared
    )
    fallback = model_repo.publish_sklearn_model(
        nan_tolerant, repo, "fraud-fallback", "1", feature_names=FEATURES
    )
    good = fraud.generate(300, seed=8, start_ms=START_MS, cards=30, rate=20.0)
    unknown_place, zero_amount = bad_transactions(good[130:150], ts=good[149]["ts"])
    bad = [e for pair in zip(unknown_place, zero_amount, strict=True) for e in pair]
    events = [*good[:150], *bad, *good[150:]]  # the good ones after the bad must still be primary
    topic = definition["source"]["topic"]
    out = featureset_env["RTML_SCORING_PREDICTIONS_TOPIC"]
    with StubV2Server(model=model, version="1") as stub:
        env = {
            **stack_env, **featureset_env, "RTML_MODEL_URL": stub.url,
            "RTML_SCORING_MODEL_REPO": str(repo), "RTML_SCORING_FALLBACK_MODEL": str(fallback),
            "RTML_SCORING_FOLLOW_VERSIONS": "false",
        }  # fmt: skip
        with running_job(env, rest, "scoring", model) as job_id:
            generate.produce(bootstrap, topic, as_records(events, fraud.key_of))
            rows = by_event(predictions(bootstrap, out, len(events), settle_s=1), events)
            assert rest.wait_for_state(job_id, {"RUNNING"}) == "RUNNING"
            assert restarts(rest, job_id) == 0
        served = stub.stats()["rows"]

    want = feature_vectors(good)
    for event in good:
        got = rows[event["event_id"]]
        assert (got["path"], got["error"]) == ("primary", None), got
        assert math.isclose(got["score"], stub_scores([want[event["event_id"]]])[0], rel_tol=1e-9)
    assert served == len(good)  # no row with a NaN ever reached the model server

    for event in unknown_place:
        got = rows[event["event_id"]]
        assert got["path"] == "fallback_model" and got["model_version"] == "fraud-fallback/1", got
        missing = ["country_new_24h", "device_new_24h"]
        assert got["error"] == f"primary: skipped, missing features {missing}", got
    for event in zero_amount:
        got = rows[event["event_id"]]
        assert got["path"] == "fallback_model", got
        assert got["error"] == "primary: skipped, missing features ['amount_vs_avg_24h']", got
        # its card's only transaction: counts 1, sums and average 0, one of each item, all new
        x = [0.0, 1, 1, 1, 0.0, 0.0, math.nan, 1, 1, 1, 1, 1, 1]
        assert math.isclose(got["score"], nan_tolerant.predict_proba([x])[0, 1], rel_tol=1e-9)
        assert got["decision"] == (got["score"] >= 0.5)
