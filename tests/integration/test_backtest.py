"""`rtml backtest` on the real stack: a generated, labelled history that the live feature job has
processed; a better and a worse candidate against the promoted production version; the events of
the range counted, features equal to the live job's from the first event on (warm-up), production
topics and Redis keys untouched; misconfigured outputs and bad ranges refused fast, exit code 2."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections import defaultdict
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import redis
import yaml
from ephemeral import private_featureset, run_rtml, running_job
from kafka import KafkaAdminClient, TopicPartition
from sklearn.metrics import average_precision_score

from rtml import generate, kafka_admin, model_repo
from rtml.backtest.topics import end_offsets
from rtml.flinkrest import FlinkRest
from rtml.generators import fraud
from rtml.kafka_io import read_committed
from rtml.scoring import model_versions
from rtml.stack import Stack
from rtml.training import models

pytestmark = pytest.mark.integration

EVENTS = 2400
KEYS = ["card_id", "event_id", "event_time"]


def _records(events: list[dict]) -> list[generate.Record]:
    """Keyed by card on partitions 0 and 1 of 3 (partition 2 stays empty), event time as the
    record timestamp (time ranges find offsets by it)."""
    return [
        generate.Record(
            str(e["card_id"]).encode(),
            json.dumps(e).encode(),
            sum(str(e["card_id"]).encode()) % 2,
            int(e["ts"]),
        )  # fmt: skip
        for e in events
    ]


def _train(frame: pd.DataFrame, out: Path, *, shuffle: bool) -> Path:
    """A candidate folder like `rtml train` writes (primary/ + fallback/), trained on `frame`;
    `shuffle` trains on labels shuffled across events: a model that learned nothing."""
    frame = frame.copy()
    if shuffle:
        frame[models.LABEL] = frame[models.LABEL].sample(frac=1.0, random_state=1).to_numpy()
    _, primary, fallback = models.train(frame, time_column="ts", exclude=KEYS, seed=0)
    for model in (primary, fallback):
        meta = models.metadata(model, frame, name="fraud", version="0", training={})
        models.save(model, out / model.role, meta)
    return out


def _redis_dump(client: redis.Redis, pattern: str) -> dict[bytes, bytes]:
    return {key: client.dump(key) for key in client.scan_iter(match=pattern, count=1000)}


@pytest.fixture(scope="module")
def history(stack: Stack, stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    """2400 labelled transactions over ~40 min processed by the live feature job (features topic
    and Redis), two candidates trained on the first 60%, production = version 1 of a private
    model promoted on a private models topic, and recorded predictions for the rest."""
    folder = tmp_path_factory.mktemp("backtest")
    name, definition, fs_env = private_featureset(folder, "fraud_card")
    definition["source"]["partitions"] = 3  # the third stays empty (see _records)
    (folder / "features" / f"{name}.yaml").write_text(yaml.safe_dump(definition))
    bootstrap = stack.settings.kafka_bootstrap
    model = f"fraud-bt-{uuid.uuid4().hex[:6]}"
    topics = {
        "source": definition["source"]["topic"],
        "features": definition["features_topic"],
        "dead_letter": definition["source"]["dead_letter_topic"],
        "labels": f"{name}.labels",
        "models": f"{name}.models",
        "predictions": f"rtml.predictions.{model}",
    }
    env = {
        **stack_env, **fs_env, "RTML_SCORING_FEATURESET": name,
        "RTML_SCORING_MODELS_TOPIC": topics["models"], "RTML_BACKTEST_DIR": str(folder / "runs"),
    }  # fmt: skip
    start_ms = int(time.time() * 1000) - int(EVENTS / 1.0 * 1000) - 120_000
    events = fraud.generate(
        EVENTS, seed=11, start_ms=start_ms, rate=1.0, cards=60, fraud_fraction=0.08
    )
    kafka_admin.ensure_topics(bootstrap, {topics["source"]: 3, topics["labels"]: 1})
    generate.produce(bootstrap, topics["source"], _records(events))
    labels = fraud.labels(events, seed=11)
    generate.produce(
        bootstrap, topics["labels"],
        [generate.Record(str(x["event_id"]).encode(), json.dumps(x).encode()) for x in labels],
    )  # fmt: skip

    # The live feature job over the whole history: the features topic and Redis of "production".
    with running_job(env, FlinkRest(stack.settings.flink_rest_url), "features", name):
        published = read_committed(
            bootstrap, topics["features"], until=lambda rs: len(rs) >= EVENTS, timeout_s=240
        )
    assert len(published) == EVENTS
    live = pd.DataFrame([json.loads(r.value) for r in published]).sort_values("ts", kind="stable")
    live = models.join_labels(live, models.label_map(labels), id_column="event_id")

    from_ms = int(sorted(e["ts"] for e in events)[int(EVENTS * 0.6)])
    past = live[live["ts"] < from_ms].drop(columns=["event_time"])
    better = _train(past, folder / "better", shuffle=False)
    worse = _train(past, folder / "worse", shuffle=True)

    # Production: the better primary published as version 1 of a private model and promoted.
    primary = joblib.load(better / "primary" / "model.joblib")
    features = json.loads((better / "primary" / "metadata.json").read_text())["feature_names"]
    repo = stack.settings.model_repo
    model_repo.publish_sklearn_model(primary, repo, model, "1", feature_names=features)
    model_versions.promote(bootstrap, model, "1", topics["models"])

    # What the live scoring job recorded for the range: the production model's scores (one event
    # scored twice, as after a replay).
    inside = live[live["ts"] >= from_ms]
    scores = primary.predict_proba(inside[features].to_numpy(dtype=np.float64))[:, 1]
    recorded = [
        {"entity": r.card_id, "event_id": r.event_id, "score": float(s), "decision": bool(s >= 0.5),
         "model_version": f"{model}/1", "path": "primary"}
        for r, s in zip(inside.itertuples(), scores, strict=True)
    ]  # fmt: skip
    recorded.append(recorded[0])
    kafka_admin.ensure_topics(bootstrap, {topics["predictions"]: 3})
    generate.produce(
        bootstrap, topics["predictions"],
        [generate.Record(r["entity"].encode(), json.dumps(r).encode()) for r in recorded],
    )  # fmt: skip
    yield {
        "env": env, "events": events, "topics": topics, "from_ms": from_ms, "live": live,
        "better": better, "worse": worse, "folder": folder, "model": model, "name": name,
    }  # fmt: skip
    shutil.rmtree(repo / model, ignore_errors=True)


def test_backtest_ranks_candidates_counts_the_range_and_touches_no_production_state(
    stack: Stack, history: dict
) -> None:
    bootstrap = stack.settings.kafka_bootstrap
    topics, name = history["topics"], history["name"]
    run_id = f"it{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(stack.settings.redis_url)
    production_keys = _redis_dump(client, f"rtml:fs:{name}:*")
    cards = {e["card_id"] for e in history["events"]}
    assert len(production_keys) == len(cards)  # one hash per card, written by the live job
    offsets_before = end_offsets(bootstrap, list(topics.values()))

    out = history["folder"] / "out"
    result = run_rtml(
        history["env"], "backtest", history["model"],
        "--candidate", str(history["better"]), "--candidate", str(history["worse"]),
        "--from", str(history["from_ms"]), "--labels-topic", topics["labels"],
        "--out", str(out), "--no-timeouts", "--run-id", run_id,
        "--output-topic", f"rtml.backtest.{run_id}.predictions",
        "--redis-prefix", f"rtml:backtest:{run_id}:",
        timeout=420,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert "scoring: " in result.stderr and "ETA" in result.stderr  # the progress line

    summary = json.loads((out / "summary.json").read_text())
    frame = pd.read_parquet(out / "frame.parquet")
    inside = [e for e in history["events"] if e["ts"] >= history["from_ms"]]
    assert summary["events"] == len(frame) == len(inside)  # the range, each event once
    assert set(frame["event_id"]) == {e["event_id"] for e in inside}
    # the empty partition 2: read as an empty split, no hang
    assert summary["range"]["start_offsets"]["2"] == summary["range"]["end_offsets"]["2"] == 0

    # Ranking: the better candidate first, on the metrics' ranking and on average precision.
    ranking = summary["metrics"]["ranking"]
    assert ranking.index("better") < ranking.index("worse"), ranking
    labels = (frame["label"] == 1.0).to_numpy()
    assert labels.sum() > 5
    ap = {m: average_precision_score(labels, frame[f"score:{m}"]) for m in ("better", "worse")}
    assert ap["better"] > ap["worse"] + 0.2, ap
    assert (out / "report.html").is_file()

    # Production, re-scored through the scorer, equals what the live job recorded; the duplicate
    # recorded prediction is counted; every model answered from its primary (no timeouts).
    assert summary["recorded"]["events_with_prediction"] == len(inside)
    assert summary["recorded"]["duplicates"] == 1
    assert np.allclose(frame["score:production"], frame["recorded_score"], rtol=1e-9, atol=0)
    for model in ("better", "worse", "production"):
        assert set(frame[f"path:{model}"]) == {"primary"}, model

    # Parity: every event's features equal the live job's, from the first event on (the warm-up
    # read the history before --from: without it the first events' 24 h counts would be lower).
    parity = summary["parity"]
    assert parity["status"] == "ok", json.dumps(parity)[:3000]
    assert parity["checked"] == parity["matching"] == len(inside)
    live = history["live"].set_index("event_id")
    first = sorted(inside, key=lambda e: e["ts"])[:100]
    seen: dict[str, int] = defaultdict(int)
    lower_without_warm_up = 0
    for event in first:
        seen[event["card_id"]] += 1
        lower_without_warm_up += (
            seen[event["card_id"]] < live.loc[event["event_id"], "tx_count_24h"]
        )
    assert lower_without_warm_up > 50

    # Isolation: production topics' end offsets and Redis keys are unchanged; the run's own
    # outputs hold what it wrote.
    assert end_offsets(bootstrap, list(topics.values())) == offsets_before
    assert _redis_dump(client, f"rtml:fs:{name}:*") == production_keys
    written = read_committed(
        bootstrap, f"rtml.backtest.{run_id}.predictions",
        until=lambda rs: len(rs) >= 2 * len(inside), timeout_s=30,
    )  # fmt: skip
    assert len(written) == 2 * len(inside)  # two candidates
    run_keys = list(client.scan_iter(match=f"rtml:backtest:{run_id}:*"))
    assert len(run_keys) == len({e["card_id"] for e in inside})
    client.close()


def _refused(env: dict[str, str], *args: str) -> str:
    started = time.monotonic()
    result = run_rtml(env, "backtest", *args, timeout=120)
    assert result.returncode == 2, (args, result.stdout, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("rtml: error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    assert time.monotonic() - started < 60, args
    return lines[0]


def test_misconfigured_backtests_are_refused_with_one_clear_line(
    stack: Stack, history: dict, tmp_path: Path
) -> None:
    env, topics, name = history["env"], history["topics"], history["name"]
    events = sorted(history["events"], key=lambda e: e["ts"])
    model, better = history["model"], str(history["better"])
    base = [model, "--candidate", better, "--labels-topic", topics["labels"]]
    since = ["--from", str(history["from_ms"])]
    offsets_before = end_offsets(stack.settings.kafka_bootstrap, list(topics.values()))

    # Outputs pointing at production: refused before anything is read.
    line = _refused(env, *base, *since, "--run-id", "r1", "--output-topic", topics["source"])
    assert f"--output-topic {topics['source']} is the source topic of feature set {name}" in line
    line = _refused(env, *base, *since, "--run-id", "r1", "--output-topic", "bt.predictions")
    assert "does not contain the run id r1" in line
    line = _refused(env, *base, *since, "--run-id", "r1", "--redis-prefix", f"rtml:fs:{name}:")
    assert f"equals 'rtml:fs:{name}:', the Redis keys of feature set {name}" in line

    # Model folders.
    line = _refused(env, model, "--candidate", str(tmp_path / "nope"), *since)
    assert "candidate folder" in line and "does not exist" in line
    (tmp_path / "bare" / "primary").mkdir(parents=True)
    line = _refused(env, model, "--candidate", str(tmp_path / "bare"), *since)
    assert "no metadata.json" in line
    ghost = tmp_path / "ghost"
    shutil.copytree(history["better"], ghost)
    meta = json.loads((ghost / "primary" / "metadata.json").read_text())
    meta["feature_names"] = [*meta["feature_names"], "amount_p99_24h"]
    (ghost / "primary" / "metadata.json").write_text(json.dumps(meta))
    line = _refused(env, model, "--candidate", str(ghost), *since)
    assert f"reads features ['amount_p99_24h'] that feature set {name} does not have" in line

    # Ranges.
    first, last = events[0]["ts"], events[-1]["ts"]
    line = _refused(env, *base, "--from", str(first - 7_200_000), "--to", str(first - 3_600_000))
    assert "empty range: no record of topic" in line
    line = _refused(env, *base, "--from", str(last + 3_600_000))
    assert "range beyond the end of topic" in line
    line = _refused(env, *base, "--offsets", "2:0")
    assert "empty range: no record to read in offsets 2:0-end" in line
    line = _refused(env, *base, "--offsets", "0:0-999999")
    assert "range beyond the end" in line

    # Nothing above wrote to a production topic.
    assert end_offsets(stack.settings.kafka_bootstrap, list(topics.values())) == offsets_before

    # Deleted records (retention): an offset below the log start is refused, not skipped.
    admin = KafkaAdminClient(bootstrap_servers=stack.settings.kafka_bootstrap)
    try:
        admin.delete_records({TopicPartition(topics["source"], 1): 10})
    finally:
        admin.close()
    line = _refused(env, *base, "--offsets", "1:5")
    assert "offset 5 was deleted" in line and "starts at 10" in line
