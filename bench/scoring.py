"""Events/s of three ways to score fraud transactions with a model server, side by side in one run.

    .venv/bin/python -m bench.scoring [--events 20000] [--stock-events 3000]
                                      [--out bench/results/scoring.json]

On a throw-away stack of its own (Kafka, MLServer, Flink; free loopback ports), with a small
scikit-learn model published under a private name, each variant gets a backlog of generated
transactions on its own topic and turns it into predictions on a Kafka topic:

(a) rtml: `jobs/scoring.py` (fraud_card features, pandas UDF, batched async scorer, exactly-once);
(b) stock: the same feature query, then PyFlink's `AsyncDataStream.unordered_wait` with an
    `AsyncFunction` making one V2 request per record (capacity 1000), exactly-once Kafka sink;
(c) loop: a hand-written Python loop (kafka-python consumer -> the same features in dicts, per
    card -> one V2 request per poll -> producer, offsets committed after each flush).

Measured: events/s between 20% and 100% of the backlog (predictions topic end offsets), on a
2-core machine with parallelism 1; also the feature job alone (Kafka only) over the same backlog,
the baseline of what scoring adds. Not measured here (yet): end-to-end latency percentiles,
at-least-once mode, and p99 under a stalled server.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import requests

FEATURES = ["amount", "tx_count_1m", "tx_count_5m", "amount_sum_5m", "merchants_5m"]
START_MS = 1_763_700_000_000


# -- (b) the stock per-record AsyncDataStream job (run on the cluster: -pym bench.scoring) -------


def stock_job(model: str) -> None:
    from pyflink.common import Row, Time, Types
    from pyflink.datastream import AsyncDataStream, AsyncFunction
    from pyflink.table import DataTypes, Schema, TableDescriptor
    from pyflink.table.expressions import col

    from jobs.features import TRANSACTION_TIMEOUT_MS, feature_query
    from jobs.scoring import params, predictions_topic
    from rtml import featuresets, flinkjob, sqlfiles, v2client
    from rtml.scoring.http import HttpClient
    from rtml.settings import FeatureJobSettings, ScoringJobSettings

    settings = ScoringJobSettings()
    definition = featuresets.load(settings.scoring_featureset, FeatureJobSettings().features_dir)
    values = params(definition, settings, model)
    t_env = flinkjob.table_environment(settings, "bench-scoring-stock")
    flinkjob.statement_set(
        t_env,
        [
            *sqlfiles.load("common/raw_source.sql", values),
            *sqlfiles.render(definition.source.sql.read_text(), values, definition.source.sql),
        ],
    )
    features = feature_query(t_env, definition).select(
        col(definition.entity).alias("entity"), col("event_id"), *[col(f) for f in FEATURES]
    )
    url, path = settings.model_url, v2client.infer_path(model)

    class PerRecord(AsyncFunction):
        """One V2 request per record, as the stock API invites."""

        def open(self, runtime_context: object) -> None:
            self.client: HttpClient | None = None

        async def async_invoke(self, value: Row) -> list[Row]:
            if self.client is None:  # made on the loop PyFlink runs async_invoke on
                self.client = HttpClient(url, max_idle=64)
            body = json.dumps(v2client.build_infer_request([[float(v) for v in value[2:]]]))
            response = await self.client.post(path, body.encode())
            output = v2client.parse_infer_response(json.loads(response.body))
            return [Row(value[0], value[1], float(np.asarray(output).reshape(-1)[-1]))]

        def timeout(self, value: Row) -> list[Row]:
            return [Row(value[0], value[1], -1.0)]

    out_type = Types.ROW_NAMED(
        ["entity", "event_id", "score"], [Types.STRING(), Types.STRING(), Types.DOUBLE()]
    )
    scored = AsyncDataStream.unordered_wait(
        t_env.to_data_stream(features), PerRecord(), Time.seconds(5), 1000, out_type
    )
    t_env.create_temporary_table(
        "stock_out",
        TableDescriptor.for_connector("kafka")
        .schema(
            Schema.new_builder()
            .column("entity", DataTypes.STRING())
            .column("event_id", DataTypes.STRING())
            .column("score", DataTypes.DOUBLE())
            .build()
        )
        .option("topic", predictions_topic(settings, model))
        .option("properties.bootstrap.servers", settings.kafka_bootstrap)
        .option("key.format", "raw")
        .option("key.fields", "entity")
        .option("value.format", "json")
        .option("sink.delivery-guarantee", "exactly-once")
        .option("sink.transactional-id-prefix", f"{values['transactional_id_prefix']}-stock")
        .option("properties.transaction.timeout.ms", str(TRANSACTION_TIMEOUT_MS))
        .build(),
    )
    t_env.from_data_stream(scored).execute_insert("stock_out")


# -- (c) the hand-written loop -------------------------------------------------------------------


class CardWindows:
    """FEATURES of a card's transactions as of each one (the event included), in arrival order."""

    def __init__(self) -> None:
        self.history: dict[str, list[tuple[int, float, str]]] = collections.defaultdict(list)

    def features(self, event: dict) -> list[float]:
        history = self.history[event["card_id"]]
        history.append((int(event["ts"]), float(event["amount"]), event["merchant_id"]))
        times = [h[0] for h in history]
        last_1m = history[bisect.bisect_left(times, event["ts"] - 60_000) :]
        last_5m = history[bisect.bisect_left(times, event["ts"] - 300_000) :]
        del history[: bisect.bisect_left(times, event["ts"] - 300_000)]  # keep 5 min
        return [
            float(event["amount"]), float(len(last_1m)), float(len(last_5m)),
            sum(h[1] for h in last_5m), float(len({h[2] for h in last_5m})),
        ]  # fmt: skip


def hand_written_loop(bootstrap: str, url: str, model: str, source: str, out: str, n: int) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    from rtml import v2client

    consumer = KafkaConsumer(
        source, bootstrap_servers=bootstrap, group_id=f"bench-loop-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest", enable_auto_commit=False, isolation_level="read_committed",
        max_poll_records=1000,
    )  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    session = requests.Session()
    windows = CardWindows()
    done = 0
    try:
        while done < n:
            for batch in consumer.poll(timeout_ms=500).values():
                events = [json.loads(record.value) for record in batch]
                rows = [windows.features(event) for event in events]
                response = session.post(
                    url + v2client.infer_path(model), json=v2client.build_infer_request(rows),
                    timeout=5,
                )  # fmt: skip
                response.raise_for_status()
                scores = np.asarray(v2client.parse_infer_response(response.json()))[:, 1]
                for event, score in zip(events, scores, strict=True):
                    value = {"entity": event["card_id"], "event_id": event["event_id"]}
                    value["score"] = float(score)
                    producer.send(
                        out, key=event["card_id"].encode(), value=json.dumps(value).encode()
                    )
                producer.flush()
                consumer.commit()
                done += len(events)
    finally:
        consumer.close()
        producer.close()


# -- the run -------------------------------------------------------------------------------------


def end_offsets(bootstrap: str, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_uncommitted")
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def watch(bootstrap: str, topic: str, events: int, limit_s: float = 1800) -> dict:
    """events/s between 20% and 100% of the backlog arriving on `topic`."""
    started, marks = time.monotonic(), {}
    while time.monotonic() - started < limit_s and 1.0 not in marks:
        done = end_offsets(bootstrap, topic)
        for fraction in (0.2, 1.0):
            if fraction not in marks and done >= fraction * events:
                marks[fraction] = time.monotonic()
        time.sleep(0.2)
    if 1.0 not in marks:
        raise RuntimeError(f"{topic}: {events} predictions not there after {limit_s} s")
    return {
        "events": events,
        "events_per_s": round(0.8 * events / max(1e-3, marks[1.0] - marks[0.2])),
        "seconds_to_all": round(marks[1.0] - started, 1),
    }


def main() -> None:  # noqa: PLR0915 - one straight run, top to bottom
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--stock-events", type=int, default=3_000)
    parser.add_argument("--out", default="bench/results/scoring.json")
    args = parser.parse_args()

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from jobs.scoring import predictions_topic
    from rtml import flinkrest, generate, kafka_admin, model_repo
    from rtml.flinkrest import FlinkRest
    from rtml.generators import GENERATORS, as_records
    from rtml.settings import ScoringJobSettings, ephemeral_stack_settings, settings_env
    from rtml.stack import PYFLINK_HOME, Stack

    fraud = GENERATORS["fraud"]
    model = f"bench_fraud_{uuid.uuid4().hex[:6]}"
    folder = Path(tempfile.mkdtemp(prefix="rtml-bench-scoring-"))
    stack = Stack(ephemeral_stack_settings(folder / "stack"))
    results: dict = {
        "what": "events/s from a backlog of fraud transactions to predictions on Kafka",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "model": f"StandardScaler + LogisticRegression on {FEATURES}",
    }
    try:
        stack.up(["kafka", "model-server", "flink-jobmanager", "flink-taskmanager"])
        bootstrap, url = stack.settings.kafka_bootstrap, stack.settings.model_url
        training = fraud.generate(2000, seed=1, start_ms=START_MS, cards=50, rate=20.0)
        windows = CardWindows()
        x = np.array([windows.features(e) for e in training])
        y = np.array([bool(e["is_fraud"]) for e in training])
        estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
        model_repo.publish_sklearn_model(
            estimator, stack.settings.model_repo, model, "1", feature_names=FEATURES
        )
        requests.post(f"{url}/v2/repository/models/{model}/load", timeout=120).raise_for_status()

        # copies of fraud_card with their own topics, one per variant
        from bench.features import fresh_featureset  # noqa: PLC0415 - the one helper for this

        features_dir, definition = fresh_featureset(folder / "fs")
        name = definition["name"]
        base_env = {
            **settings_env(stack.settings), "RTML_FEATURES_DIR": str(features_dir),
            "RTML_SCORING_FEATURESET": name, "RTML_SCORING_FOLLOW_VERSIONS": "false",
        }  # fmt: skip
        source = definition["source"]["topic"]
        events = fraud.generate(args.events, seed=3, start_ms=START_MS, cards=500, rate=50.0)
        kafka_admin.ensure_topics(bootstrap, {source: 2})
        generate.produce(bootstrap, source, as_records(events, fraud.key_of))
        rest = FlinkRest(stack.settings.flink_rest_url)

        def run_job(variant: str, module: str, count: int) -> dict:
            env = {
                **base_env, "RTML_SCORING_ID_PREFIX": f"bench-{variant}",
                "RTML_SCORING_PREDICTIONS_TOPIC": f"bench.{variant}.predictions",
            }  # fmt: skip
            os.environ.update(env)
            topic = predictions_topic(ScoringJobSettings(), model)
            if module == "jobs.features":
                topic = definition["features_topic"]
            kafka_admin.ensure_topics(bootstrap, {topic: 2})
            argv = flinkrest.submit_argv(
                flinkrest.flink_bin(PYFLINK_HOME), module,
                cluster=f"127.0.0.1:{stack.settings.flink_rest_port}",
                python=stack.settings.python, detached=True,
                job_args={"jobs.scoring": [model], "jobs.features": [name]}.get(
                    module, ["stock-job", model]
                ),
            )  # fmt: skip
            job_id = flinkrest.submit(
                argv, {**os.environ, **stack.flink_client_env()}, detached=True
            )
            assert job_id is not None
            try:
                return watch(bootstrap, topic, count)
            finally:
                rest.cancel(job_id)
                rest.wait_for_state(job_id, {"CANCELED", "FAILED", "FINISHED"}, timeout_s=120)

        # the same job without scoring, as the baseline of what scoring costs on this machine now
        os.environ["RTML_ONLINE_STORE"] = "false"
        results["features_only"] = run_job("features", "jobs.features", len(events))
        print("features only", results["features_only"], flush=True)
        results["rtml"] = run_job("rtml", "jobs.scoring", len(events))
        print("rtml", results["rtml"], flush=True)
        # the stock variant reads the same backlog; measured over its first --stock-events
        results["stock_async_per_record"] = run_job("stock", "bench.scoring", args.stock_events)
        print("stock", results["stock_async_per_record"], flush=True)

        out = "bench.loop.predictions"
        kafka_admin.ensure_topics(bootstrap, {out: 2})
        started = time.monotonic()
        hand_written_loop(bootstrap, url, model, source, out, len(events))
        seconds = time.monotonic() - started
        results["python_loop"] = {
            "events": len(events), "events_per_s": round(len(events) / seconds),
            "seconds_to_all": round(seconds, 1), "note": "whole run, at-least-once",
        }  # fmt: skip
        print("loop", results["python_loop"], flush=True)
        rate = results["rtml"]["events_per_s"]
        results["rtml_vs_stock"] = round(
            rate / results["stock_async_per_record"]["events_per_s"], 1
        )
        results["rtml_vs_loop"] = round(rate / results["python_loop"]["events_per_s"], 1)
    finally:
        stack.down()
        shutil.rmtree(stack.settings.model_repo / model, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["stock-job"]:
        stock_job(sys.argv[2])
    else:
        main()
