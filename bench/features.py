"""Sustained throughput of the fraud_card feature job, with and without the Redis online store.

    .venv/bin/python -m bench.features [--events 100000] [--out bench/results/features.json]

Starts a throw-away stack of its own (Kafka, Redis, Flink session cluster on free loopback ports,
in a temporary folder), sends a backlog of generated transactions, submits the feature job twice
(online store on, then off, each from the earliest offset under its own consumer group) and times
how fast each one's committed output on the features topic grows, between 20% and 100% of the
backlog (leaving out start-up). Compare the two side by side: the ratio is what the Redis writer
costs. Not measured yet: freshness (event produced -> visible in Redis) at a fixed rate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from rtml import featuresets, generate, kafka_admin
from rtml.flinkrest import FlinkRest
from rtml.generators import GENERATORS, as_records
from rtml.settings import ephemeral_stack_settings, settings_env
from rtml.stack import Stack


def committed(bootstrap: str, topic: str) -> int:
    """Records (and transaction markers) below the last stable offset of every partition."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def run_variant(env: dict[str, str], stack: Stack, topic: str, before: int, events: int) -> dict:
    rest = FlinkRest(stack.settings.flink_rest_url)
    submitted = subprocess.run(
        [sys.executable, "-m", "rtml.cli", "submit", "features", "fraud_card", "--detached"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    job_id = submitted.stdout.strip().splitlines()[-1]
    started = time.monotonic()
    marks: dict[float, float] = {}
    try:
        while time.monotonic() - started < 1800:
            done = committed(stack.settings.kafka_bootstrap, topic) - before
            for fraction in (0.2, 1.0):
                if fraction not in marks and done >= fraction * events:
                    marks[fraction] = time.monotonic()
            if 1.0 in marks:
                break
            time.sleep(0.5)
    finally:
        rest.cancel(job_id)
        rest.wait_for_state(job_id, {"CANCELED", "FAILED", "FINISHED"}, timeout_s=120)
    if 1.0 not in marks:
        raise RuntimeError(f"the job did not finish {events} events in 30 min")
    return {
        "events_per_s": round(0.8 * events / (marks[1.0] - marks[0.2])),
        "seconds_to_all": round(marks[1.0] - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/features.json"))
    args = parser.parse_args()
    definition = featuresets.load("fraud_card")
    with tempfile.TemporaryDirectory(prefix="rtml-bench-") as folder:
        settings = ephemeral_stack_settings(Path(folder))
        stack = Stack(settings)
        env = {**os.environ, **settings_env(settings)}
        try:
            stack.up(["kafka", "redis", "flink-taskmanager"])
            fraud = GENERATORS["fraud"]
            backlog = fraud.iter_events(args.events, seed=1, start_ms=1_763_700_000_000, rate=200.0)
            kafka_admin.ensure_topics(
                settings.kafka_bootstrap,
                {definition.source.topic: definition.source.partitions,
                 definition.features_topic: definition.source.partitions,
                 definition.source.dead_letter_topic: 1},
            )  # fmt: skip
            generate.produce(
                settings.kafka_bootstrap, definition.source.topic, as_records(backlog, fraud.key_of)
            )
            results = {}
            for variant, online in (("redis_and_kafka", "true"), ("kafka_only", "false")):
                before = committed(settings.kafka_bootstrap, definition.features_topic)
                variant_env = {
                    **env,
                    "RTML_ONLINE_STORE": online,
                    "RTML_FEATURES_ID_PREFIX": f"bench-{variant}",
                }
                results[variant] = run_variant(
                    variant_env, stack, definition.features_topic, before, args.events
                )
                print(variant, results[variant], flush=True)
        finally:
            stack.down()
    report = {
        "benchmark": "fraud_card feature job, sustained",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count()},
        "events": args.events,
        "windows": "1 min, 5 min, 1 h, 24 h per card, 14 windowed features",
        "parallelism": 1,
        "results": results,
        "redis_writer_cost_ratio": round(
            results["kafka_only"]["events_per_s"] / results["redis_and_kafka"]["events_per_s"], 2
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["results"]), report["redis_writer_cost_ratio"])


if __name__ == "__main__":
    main()
