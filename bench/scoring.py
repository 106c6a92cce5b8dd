"""Events/s and end-to-end latency of three ways to score fraud transactions, side by side.

    .venv/bin/python -m bench.scoring [--events 180000] [--stock-events 3000]
        [--latency-seconds 20] [--stall-events 2000] [--with-features-only]
        [--conf KEY=VALUE ...] [--out bench/results/scoring.json]

On a throw-away stack of its own (Kafka, MLServer, Flink; free loopback ports), with a small
scikit-learn model published under a private name, each variant gets topics of its own (a copy of
fraud_card per variant) and turns transactions into predictions on a Kafka topic:

(a) rtml: `jobs/scoring.py` (fraud_card features, pandas UDF, batched async scorer), once with
    the exactly-once predictions sink (the default) and once with RTML_SCORING_DELIVERY=
    at-least-once;
(b) stock: the same feature query, then PyFlink's `AsyncDataStream.unordered_wait` with an
    `AsyncFunction` making one V2 request per record (capacity 1000), exactly-once Kafka sink;
(c) loop: a hand-written Python loop in a process of its own (kafka-python consumer -> every
    fraud_card feature in dicts, per card, as the Flink job computes them -> the model's five in
    one V2 request per poll -> producer, offsets committed after each flush: at-least-once by
    nature, state in memory only).

Each variant, in turn (one job at a time on the 2 cores, parallelism 1):

1. Throughput: a backlog of generated transactions (`EVENTS_PER_CARD` per card); events/s between
   20% and 100% of it arriving on the predictions topic (its end offsets, polled every 0.2 s: the
   exactly-once sink writes as it goes and commits at checkpoints, so uncommitted end offsets
   follow the job continuously). A Flink variant's rate enters the ratios only when that span
   lasted `SUSTAINED_CHECKPOINTS` checkpoint intervals or more: a shorter one measures the job's
   first seconds (a cold JIT, the first checkpoint, or none at all), not its sustained rate.
2. Latency, on the same running job: transactions sent at half of that measured rate for
   --latency-seconds (after WARMUP_S, 15 s, of warm-up) through Kafka's Java console producer,
   each with `ts` = the wall clock when sent; `read_committed` consumers of the predictions
   topic (Kafka's Java console consumer, one per partition, each line stamped by a thread of this
   process as it arrives) note when each event's prediction first becomes visible. Latency =
   visible - ts: Kafka, the job (or loop), the model server and, in exactly-once mode, the wait
   for the checkpoint that commits the transaction. Predictions not visible 15 s after the last
   event are counted as `unseen`. For the Flink variants, the checkpoints completed meanwhile:
   end-to-end durations and sizes, and for the slowest one, per operator chain, the parts of its
   slowest subtask (start delay: the barrier's way there, behind the records queued before it;
   alignment; sync and async phases); for an exactly-once sink, per committed transaction, the
   parts of its oldest event's wait (`exactly_once_wait`); for an at-least-once one, how much
   of the latency over 150 ms was sent near a checkpoint (`tail_near_checkpoints`).
3. Finally (a) at-least-once against a V2 stub server that never answers in time (it sleeps 5 s
   per request), with the published model as the local fallback model: the same latency
   measurement at rtml's at-least-once half rate, plus the fallback rate and the scorer's own
   `latency_ms` (score() call -> prediction) from the predictions.

`--with-features-only` adds the feature job alone (Kafka only, no scoring) over the same backlog,
the baseline of what scoring adds. `--conf` sets Flink options for the run's cluster (e.g.
execution.buffer-timeout.interval=10ms). The targets of issue #4 are written next to the measured
values. Everything shares this machine's cores (the producer, the consumer and the loop too), so
compare the variants of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import json
import multiprocessing
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import requests

FEATURES = ["amount", "tx_count_1m", "tx_count_5m", "amount_sum_5m", "merchants_5m"]
START_MS = 1_763_700_000_000
# Sending starts three JVMs (the producer and two consumers) beside the job: after 5 s of warm-up
# the first 1-6 s of the measured span still drained what queued meanwhile (latencies up to
# 0.8-2.4 s, falling), which alone made p99 in 13 of 13 runs of rtml_alo (2026-12-07).
WARMUP_S = 15.0
DRAIN_S = 15.0  # how long predictions may take to show up after the last event is sent
STALL_SLEEP_MS = 5000  # the stalled server answers after this long (far past any deadline)
# issue #4's targets
VARIANTS = ("rtml_eo", "rtml_alo", "stock", "loop", "stalled")  # in the order they run
STOCK_RATIO_TARGET = 20.0
LOOP_RATIO_TARGET = 5.0
EXACTLY_ONCE_SLACK_MS = 300.0  # p99 under the checkpoint interval + this
AT_LEAST_ONCE_P99_MS = 150.0
STALLED_SLACK_MS = 50.0  # p99 under the scoring deadline + this (+ the pipeline's own latency)
# An event sent this long before a checkpoint's trigger, or this long after it, is "near" it: the
# trigger, the barrier's way, the sync phase (100-300 ms) and the catch-up after it.
NEAR_CHECKPOINT_MS = (500.0, 1000.0)
# The checkpoints the JobManager keeps for /checkpoints (Flink's default is 10: fewer than one
# latency measurement spans, warm-up and drain included).
CHECKPOINT_HISTORY = 100
# A Flink variant's events/s counts when its measured span covers this many checkpoints.
SUSTAINED_CHECKPOINTS = 2
# The backlog's transactions per card (the 60,000 over 500 cards of 2026-12-06): its cards grow
# with --events, so a longer backlog does not by itself fill the loop's per-card lists more.
EVENTS_PER_CARD = 120


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


CARD_WINDOWS_MS = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000, "24h": 86_400_000}


class CardWindows:
    """Every fraud_card feature (sql/features/fraud_card.sql) of a card's transactions as of each
    one (the event included), in arrival order, as one would write it by hand: the card's last 24 h
    in a list, each window found by bisection and aggregated in full per event. The loop computes
    what the Flink job computes, not only the model's FEATURES, so the two do the same work."""

    def __init__(self) -> None:
        self.history: dict[str, list[dict]] = collections.defaultdict(list)

    def all_features(self, event: dict) -> dict[str, object]:
        history = self.history[event["card_id"]]
        history.append(event)
        times = [e["ts"] for e in history]
        now = event["ts"]
        del history[: bisect.bisect_left(times, now - CARD_WINDOWS_MS["24h"])]
        times = [e["ts"] for e in history]
        window = {
            name: history[bisect.bisect_left(times, now - length) :]
            for name, length in CARD_WINDOWS_MS.items()
        }
        amounts = {name: [float(e["amount"]) for e in rows] for name, rows in window.items()}
        mean_24h = statistics.fmean(amounts["24h"])

        def distinct(name: str, field: str) -> int:
            return len({e.get(field) for e in window[name] if e.get(field) is not None})

        def new_in_24h(field: str) -> bool | None:
            mine = event.get(field)
            if mine is None:
                return None
            return sum(1 for e in window["24h"] if e.get(field) == mine) == 1

        return {
            "amount": float(event["amount"]),
            **{f"tx_count_{name}": len(rows) for name, rows in window.items()},
            "amount_sum_5m": sum(amounts["5m"]),
            "amount_sum_24h": sum(amounts["24h"]),
            "amount_avg_24h": mean_24h,
            "amount_min_5m": min(amounts["5m"]),
            "amount_max_24h": max(amounts["24h"]),
            "amount_std_24h": statistics.pstdev(amounts["24h"]),
            "amount_vs_avg_24h": float(event["amount"]) / mean_24h if mean_24h else None,
            "merchants_1m": distinct("1m", "merchant_id"),
            "merchants_5m": distinct("5m", "merchant_id"),
            "merchants_1h": distinct("1h", "merchant_id"),
            "countries_1h": distinct("1h", "country"),
            "countries_24h": distinct("24h", "country"),
            "ips_1h": distinct("1h", "ip"),
            "ips_24h": distinct("24h", "ip"),
            "devices_24h": distinct("24h", "device_id"),
            "country_new_24h": new_in_24h("country"),
            "ip_new_24h": new_in_24h("ip"),
            "device_new_24h": new_in_24h("device_id"),
        }

    def features(self, event: dict) -> list[float]:
        """The model's FEATURES, in order, out of all of them."""
        computed = self.all_features(event)
        return [float(computed[name]) for name in FEATURES]  # type: ignore[arg-type]


def hand_written_loop(
    bootstrap: str, url: str, model: str, source: str, out: str, stop: threading.Event
) -> None:
    """Consume, compute features, score one request per poll, produce, commit; until `stop`."""
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
    try:
        while not stop.is_set():
            for batch in consumer.poll(timeout_ms=100).values():
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
    finally:
        consumer.close()
        producer.close()


# -- measuring ----------------------------------------------------------------------------------


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def watch(bootstrap: str, topic: str, events: int, limit_s: float = 900) -> dict:
    """events/s between 20% and 100% of the backlog arriving on `topic`, how long that span
    lasted, and the rate in each tenth of the backlog after the first (warm-up and checkpoints
    show there)."""
    from bench.features import backlog_rate, poll_progress, rates_by_tenth, reached_at

    progress = poll_progress(bootstrap, topic, events, limit_s)
    at_20_percent, at_all = reached_at(progress, 0.2 * events), reached_at(progress, events)
    if at_20_percent is None or at_all is None:
        raise RuntimeError(f"{topic}: {events} predictions not there after {limit_s} s")
    return {
        "events": events,
        "events_per_s": backlog_rate(events, at_20_percent, at_all),
        "measured_s": round(at_all - at_20_percent, 1),
        "seconds_to_all": round(at_all, 1),
        "events_per_s_by_tenth": rates_by_tenth(progress, events),
    }


def unsustained(results: dict, checkpoint_ms: float) -> list[str]:
    """The Flink variants whose backlog rate was measured over less than `SUSTAINED_CHECKPOINTS`
    checkpoint intervals: such a rate is the job's first seconds (a cold JIT, the first
    checkpoint, or no checkpoint at all), not what it sustains (pure)."""
    return [
        variant
        for variant in ("rtml_eo", "rtml_alo")
        if variant in results["throughput"]
        and results["throughput"][variant].get("measured_s", 0.0) * 1000
        < SUSTAINED_CHECKPOINTS * checkpoint_ms
    ]


def half_rate(results: dict, variant: str) -> float:
    """Half of `variant`'s measured events/s, the rate its latency is measured at; an error
    when its backlog arrived too fast to measure (pure)."""
    measured = results["throughput"][variant]["events_per_s"]
    if measured is None:
        raise RuntimeError(
            f"{variant}: the backlog arrived within one poll, so its rate is unknown: raise "
            "--events (or --stall-events)"
        )
    return measured / 2


def stamped_lines(
    chunks: Iterable[tuple[int, bytes]], carry: bytes = b""
) -> tuple[list[tuple[int, bytes]], bytes]:
    """The complete lines of output read in stamped chunks, each with the stamp of the chunk that
    ended it, and the unfinished rest (`carry`: the start of the next call's first line) (pure)."""
    lines: list[tuple[int, bytes]] = []
    for stamp, data in chunks:
        *complete, carry = (carry + data).split(b"\n")
        lines.extend((stamp, line) for line in complete)
    return lines, carry


class Visibility:
    """When each event id's prediction first became visible to a `read_committed` consumer of a
    predictions topic (wall clock ms), with the prediction's path and latency_ms.

    The consumers are Kafka's Java console consumer, one per partition, from the partition's
    current end: a thread per consumer only stamps each chunk of its output with the wall clock
    as it arrives; the lines are parsed when `seen` is read. A kafka-python consumer parsing JSON
    in this process took ~0.6 s to read one exactly-once transaction of 15k predictions, and the
    later records of it were stamped that much late (the measuring process is also sending).
    """

    def __init__(self, bootstrap: str, topic: str, jars: Path, log: Path) -> None:
        from kafka import KafkaConsumer, TopicPartition

        from bench.features import TOOL_JVM_OPTIONS

        probe = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
        try:
            partitions = [
                TopicPartition(topic, p) for p in sorted(probe.partitions_for_topic(topic))
            ]
            ends = probe.end_offsets(partitions)  # read_committed: each partition's stable end
        finally:
            probe.close()
        self.log = log.open("wb")
        self.processes = [
            subprocess.Popen(
                ["java", *TOOL_JVM_OPTIONS, "-cp", f"{jars}/*",
                 "org.apache.kafka.tools.consumer.ConsoleConsumer",
                 "--bootstrap-server", bootstrap, "--topic", topic,
                 "--partition", str(partition.partition), "--offset", str(ends[partition]),
                 "--isolation-level", "read_committed",
                 "--command-property", "fetch.max.wait.ms=10"],
                stdout=subprocess.PIPE, stderr=self.log,
            )
            for partition in partitions
        ]  # fmt: skip
        self._chunks: list[list[tuple[int, bytes]]] = [[] for _ in self.processes]
        self._readers = [
            threading.Thread(target=self._read, args=(process, chunks), daemon=True)
            for process, chunks in zip(self.processes, self._chunks, strict=True)
        ]
        self._parsed = [0 for _ in self.processes]
        self._carry = [b"" for _ in self.processes]
        self._seen: dict[str, tuple[int, str | None, float | None]] = {}
        self.duplicates = 0
        self.other_lines: list[str] = []

    def start(self) -> None:
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(process: subprocess.Popen, chunks: list[tuple[int, bytes]]) -> None:
        assert process.stdout is not None
        fd = process.stdout.fileno()
        while data := os.read(fd, 1 << 20):
            chunks.append((wall_ms(), data))

    @property
    def seen(self) -> dict[str, tuple[int, str | None, float | None]]:
        """Event id -> (first visible ms, path, latency_ms), for every line read so far."""
        for i, chunks in enumerate(self._chunks):
            arrived = len(chunks)
            lines, self._carry[i] = stamped_lines(chunks[self._parsed[i] : arrived], self._carry[i])
            self._parsed[i] = arrived
            for stamp, line in lines:
                if line.startswith(b"{"):
                    self._note(json.loads(line), stamp)
                elif line.strip():  # the tool's own messages (its option warnings go to stdout)
                    self.other_lines.append(line.decode(errors="replace"))
        return self._seen

    def _note(self, row: dict, stamp: int) -> None:
        if row["event_id"] in self._seen:
            self.duplicates += 1
        else:
            self._seen[row["event_id"]] = (stamp, row.get("path"), row.get("latency_ms"))

    def stop(self) -> None:
        """Stop the consumers; what they printed stays readable through `seen`."""
        for process in self.processes:
            process.terminate()
        for process, reader in zip(self.processes, self._readers, strict=True):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
            reader.join(timeout=10)
        self.log.close()


def send_at_rate(
    producer: object, events: Iterator[dict], rate: float, seconds: float, sent: dict[str, int]
) -> float:
    """Send events at `rate`/s for `seconds`, each with ts = now (recorded in `sent` by event id);
    returns the rate achieved. A sender that falls behind timestamps what it actually sends."""
    started = time.monotonic()
    count = 0
    while (elapsed := time.monotonic() - started) < seconds:
        lines = []
        while count < int(elapsed * rate) + 1:
            event = next(events)
            event["ts"] = sent[event["event_id"]] = wall_ms()
            lines.append(f"{event['card_id']}\t{json.dumps(event)}\n")
            count += 1
        producer.stdin.write("".join(lines).encode())  # type: ignore[attr-defined]
        producer.stdin.flush()  # type: ignore[attr-defined]
        time.sleep(0.002)
    return count / (time.monotonic() - started)


def summary(values: list[float]) -> dict[str, float]:
    from bench.features import percentile  # the one nearest-rank percentile of the benchmarks

    ordered = sorted(values)
    if not ordered:
        return {}
    return {
        "p50": round(percentile(ordered, 50), 1),
        "p95": round(percentile(ordered, 95), 1),
        "p99": round(percentile(ordered, 99), 1),
        "max": round(ordered[-1], 1),
        "mean": round(statistics.fmean(ordered), 1),
    }


def measure_latency(
    bootstrap: str, jars: Path, source: str, out: str, rate: float, seconds: float, log: Path,
    visible_and_sent: list[tuple[int, int]] | None = None,
) -> dict:  # fmt: skip
    """Events sent at `rate` with ts = now -> predictions visible to read_committed (see above);
    each measured event's (visible, sent) wall clock ms go to `visible_and_sent` if given."""
    from bench.features import ConsoleProducer
    from rtml.generators import GENERATORS

    visibility = Visibility(bootstrap, out, jars, log.with_suffix(".consumer.log"))
    visibility.start()
    producer = ConsoleProducer(bootstrap, source, jars, log)
    count = int(rate * (WARMUP_S + seconds) * 1.2) + 1000
    events = GENERATORS["fraud"].iter_events(count, seed=11, start_ms=wall_ms(), cards=500)
    measured: dict[str, int] = {}
    try:
        send_at_rate(producer, events, rate, WARMUP_S, {})
        load_before = os.getloadavg()[0]
        achieved = send_at_rate(producer, events, rate, seconds, measured)
        load_after = os.getloadavg()[0]
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline and not measured.keys() <= visibility.seen.keys():
            time.sleep(0.1)
    finally:
        visibility.stop()
        producer.close()
    first_seen = visibility.seen
    seen = [(first_seen[e], ts) for e, ts in measured.items() if e in first_seen]
    if visible_and_sent is not None:
        visible_and_sent.extend((visible, ts) for (visible, _, _), ts in seen)
    result = {
        "target_events_per_s": round(rate),
        "achieved_events_per_s": round(achieved),
        "seconds": seconds,
        "events": len(measured),
        "seen": len(seen),
        "unseen": len(measured) - len(seen),
        "duplicates_seen": visibility.duplicates,
        "consumer_messages": visibility.other_lines[:10],
        "latency_ms": summary([visible - ts for (visible, _, _), ts in seen]),
        "load_average_1m": {"before": load_before, "after": load_after},
    }
    paths = collections.Counter(path for (_, path, _), _ in seen if path is not None)
    if paths:  # rtml's predictions say how they were scored
        result["paths"] = dict(paths)
        result["fallback_rate"] = round(1 - paths["primary"] / max(1, sum(paths.values())), 4)
        result["scoring_latency_ms"] = summary(
            [latency for (_, _, latency), _ in seen if latency is not None]
        )
    return result


def slowest_operators(rest: Any, job_id: str, checkpoint_id: int) -> dict[str, dict]:
    """Per job vertex, one checkpoint's end-to-end duration (ms) and, of its slowest subtask, the
    parts: start delay (the barrier's way to it), alignment, sync and async phases."""
    path = f"/jobs/{job_id}/checkpoints/details/{checkpoint_id}"
    details = rest._call("GET", path)
    names = {v["id"]: v["name"] for v in rest.job(job_id).get("vertices", [])}
    out = {}
    for vertex_id, task in details.get("tasks", {}).items():
        subtasks = rest._call("GET", f"{path}/subtasks/{vertex_id}").get("subtasks", [])
        slowest = max(subtasks, key=lambda t: t.get("end_to_end_duration", 0), default={})
        out[names.get(vertex_id, vertex_id)[:80]] = {
            "end_to_end": float(task.get("end_to_end_duration", 0)),
            "start_delay": slowest.get("start_delay"),
            "alignment": (slowest.get("alignment") or {}).get("duration"),
            "sync": (slowest.get("checkpoint") or {}).get("sync"),
            "async": (slowest.get("checkpoint") or {}).get("async"),
        }
    return dict(sorted(out.items(), key=lambda item: -item[1]["end_to_end"]))


def checkpoints_since(overview: dict, since_ms: int, *, completed: bool = True) -> list[dict]:
    """The checkpoints triggered since `since_ms` in a job's /checkpoints answer (its last
    `CHECKPOINT_HISTORY`): the completed ones, or with `completed=False` every one (pure)."""
    return [
        c for c in overview.get("history", [])
        if c.get("trigger_timestamp", 0) >= since_ms
        and (not completed or c.get("status") == "COMPLETED")
    ]  # fmt: skip


def checkpoint_stats(overview: dict, since_ms: int) -> dict | None:
    """The checkpoints completed since `since_ms`: end-to-end durations (trigger to the last
    acknowledgement; the exactly-once sink commits after that) and sizes. None if none
    completed (pure)."""
    done = checkpoints_since(overview, since_ms)
    if not done:
        return None
    return {
        "completed": len(done),
        "end_to_end_ms": summary([float(c["end_to_end_duration"]) for c in done]),
        "checkpointed_bytes": summary([float(c.get("checkpointed_size", 0)) for c in done]),
    }


def exactly_once_wait(
    visible_and_sent: list[tuple[int, int]], overview: dict, since_ms: int
) -> dict | None:
    """Where an exactly-once prediction's wait beyond the checkpoint interval goes (pure).

    The predictions that became visible after checkpoint k's last acknowledgement (and not after
    k+1's) are the transaction that checkpoint k committed. For each such transaction: the
    trigger interval (k-1 to k), the checkpoint's end-to-end duration, the time from its last
    acknowledgement to the first of them being visible (notification, commit, consumer fetch),
    and how long before checkpoint k-1's trigger its oldest event was sent (the source's
    ingestion lag: an event read after the barrier waits for the next checkpoint). The
    transaction's oldest event waits about the sum of these.
    """
    done = sorted(checkpoints_since(overview, since_ms), key=lambda c: c["trigger_timestamp"])
    parts: dict[str, list[float]] = {
        "trigger_interval": [], "end_to_end": [], "ack_to_visible": [],
        "sent_before_previous_trigger": [], "oldest_event_wait": [],
    }  # fmt: skip
    for previous, current, following in zip(done, done[1:], [*done[2:], None], strict=False):
        acked = current["latest_ack_timestamp"]
        until = following["latest_ack_timestamp"] if following else float("inf")
        batch = [(v, ts) for v, ts in visible_and_sent if acked < v <= until]
        if not batch:
            continue
        oldest = min(ts for _, ts in batch)
        parts["trigger_interval"].append(
            current["trigger_timestamp"] - previous["trigger_timestamp"]
        )
        parts["end_to_end"].append(float(current["end_to_end_duration"]))
        parts["ack_to_visible"].append(min(v for v, _ in batch) - acked)
        parts["sent_before_previous_trigger"].append(previous["trigger_timestamp"] - oldest)
        parts["oldest_event_wait"].append(max(v - ts for v, ts in batch))
    if not parts["end_to_end"]:
        return None
    return {"transactions": len(parts["end_to_end"])} | {
        f"{name}_ms": summary(values) for name, values in parts.items()
    }


def tail_near_checkpoints(
    visible_and_sent: list[tuple[int, int]], triggers_ms: Iterable[int], over_ms: float,
    near_ms: tuple[float, float] = NEAR_CHECKPOINT_MS,
) -> dict | None:  # fmt: skip
    """How much of a latency tail the checkpoints explain (pure).

    Of the events whose latency was over `over_ms`, the share sent from `near_ms[0]` before a
    checkpoint's trigger to `near_ms[1]` after it; beside it, the share of all events sent in
    those spans: what the tail's share would be if checkpoints had nothing to do with it.
    None without events.
    """
    triggers = sorted(triggers_ms)
    before, after = near_ms

    def near(sent: int) -> bool:
        i = bisect.bisect_right(triggers, sent + before)  # the last trigger at or before it
        return i > 0 and sent - triggers[i - 1] <= after

    if not visible_and_sent:
        return None
    flags = [(visible - sent > over_ms, near(sent)) for visible, sent in visible_and_sent]
    tail = [is_near for over, is_near in flags if over]
    return {
        "over_ms": over_ms,
        "near_checkpoint_ms": [-before, after],
        "events_over": len(tail),
        "share_over": round(len(tail) / len(flags), 4),
        "near_checkpoint_share_of_those_over": round(sum(tail) / len(tail), 3) if tail else None,
        "near_checkpoint_share_of_all": round(sum(n for _, n in flags) / len(flags), 3),
    }


def duration_ms(text: str) -> float:
    """A Flink duration ("5s", "5 s", "500ms", "1min") in ms."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m)?\s*", str(text))
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    unit = {"ms": 1, "s": 1000, "min": 60_000, "m": 60_000, None: 1}[match.group(2)]
    return float(match.group(1)) * unit


def target(name: str, wanted: str, measured: float | None, met: bool | None) -> dict:
    return {"target": name, "wanted": wanted, "measured": measured, "met": met}


# -- the run -------------------------------------------------------------------------------------


def variant_featuresets(folder: Path, variants: list[str]) -> tuple[Path, dict[str, dict]]:
    """Copies of fraud_card (the real SQL), one per variant, `bench_<variant>`, with own topics."""
    from bench.features import renamed_fraud_cards

    features_dir, definitions = renamed_fraud_cards(folder, {f"bench_{v}": v for v in variants})
    return features_dir, {v: definitions[f"bench_{v}"] for v in variants}


def main() -> None:  # noqa: PLR0915 - one straight run, top to bottom
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=180_000, help="backlog per variant")
    parser.add_argument("--stock-events", type=int, default=3_000, help="the stock variant's")
    parser.add_argument("--stall-events", type=int, default=2_000, help="warm-up of the stall run")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--with-features-only", action="store_true")
    parser.add_argument("--conf", action="append", default=[], help="Flink option KEY=VALUE")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {','.join(VARIANTS)} (the stalled run needs rtml_alo)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/scoring.json"))
    args = parser.parse_args()

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from rtml import flinkconf, flinkrest, kafka_admin, model_repo
    from rtml.flinkrest import FlinkRest
    from rtml.generators import GENERATORS
    from rtml.settings import ScoringJobSettings, ephemeral_stack_settings, settings_env
    from rtml.stack import PYFLINK_HOME, Stack
    from rtml.testing.v2_stub_server import StubV2Server

    fraud = GENERATORS["fraud"]
    model = f"bench_fraud_{uuid.uuid4().hex[:6]}"
    folder = Path(tempfile.mkdtemp(prefix="rtml-bench-scoring-"))
    overrides = {"web.checkpoints.history": str(CHECKPOINT_HISTORY)}
    conf_dir = flinkconf.with_overrides(folder, overrides | flinkconf.parse_overrides(args.conf))
    settings = ephemeral_stack_settings(folder / "stack", flink_conf_dir=conf_dir)
    stack = Stack(settings)
    conf = flinkconf.load(settings.flink_conf_dir)
    checkpoint_ms = duration_ms(conf["execution.checkpointing.interval"])
    deadline_ms = ScoringJobSettings().scoring_deadline_ms
    started = time.monotonic()
    results: dict = {
        "what": "fraud transactions -> features -> model server -> predictions on Kafka: "
        "events/s from a backlog, and latency from sending (ts = now) to the prediction being "
        "visible to a read_committed consumer at half of each variant's measured events/s",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m_at_start": os.getloadavg()[0],
        },  # fmt: skip
        "model": f"StandardScaler + LogisticRegression on {FEATURES}",
        "settings": {
            "parallelism": 1,
            "checkpoint_interval_ms": checkpoint_ms,
            "scoring_deadline_ms": deadline_ms,
            "scoring_linger_ms": {
                delivery: ScoringJobSettings(scoring_delivery=delivery).scoring_linger_ms
                for delivery in ("exactly-once", "at-least-once")
            },
            "flink_conf_overrides": args.conf,
            "latency_warmup_s": WARMUP_S,
            "stalled_server_sleeps_ms": STALL_SLEEP_MS,
        },
        "throughput": {},
        "latency": {},
    }
    variants = chosen_variants(args.variants)
    if args.with_features_only:
        variants.insert(0, "features")
    try:
        stack.up(["kafka", "model-server", "flink-jobmanager", "flink-taskmanager"])
        bootstrap, url = settings.kafka_bootstrap, settings.model_url
        jars = settings.jars_dir / "kafka"
        training = fraud.generate(2000, seed=1, start_ms=START_MS, cards=50, rate=20.0)
        windows = CardWindows()
        x = np.array([windows.features(e) for e in training])
        y = np.array([bool(e["is_fraud"]) for e in training])
        estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
        published = model_repo.publish_sklearn_model(
            estimator, settings.model_repo, model, "1", feature_names=FEATURES
        )
        requests.post(f"{url}/v2/repository/models/{model}/load", timeout=120).raise_for_status()

        features_dir, definitions = variant_featuresets(folder / "fs", variants)
        backlog = fraud.generate(
            args.events, seed=3, start_ms=START_MS, cards=max(1, args.events // EVENTS_PER_CARD),
            rate=50.0,
        )  # fmt: skip
        rest = FlinkRest(settings.flink_rest_url)
        base_env = {
            **os.environ, **settings_env(settings),
            "RTML_FEATURES_DIR": str(features_dir), "RTML_ONLINE_STORE": "false",
            "RTML_SCORING_FOLLOW_VERSIONS": "false",
        }  # fmt: skip

        def prepare(variant: str, events: int) -> tuple[str, str]:
            """The variant's source topic with a backlog of `events`, and its output topic."""
            from bench.features import ConsoleProducer

            definition = definitions[variant]
            source = definition["source"]["topic"]
            out = f"bench.{variant}.predictions"
            if variant == "features":
                out = definition["features_topic"]
            kafka_admin.ensure_topics(bootstrap, {source: 2, out: 2})
            producer = ConsoleProducer(bootstrap, source, jars, folder / f"{variant}-backlog.log")
            producer.stdin.write(
                "".join(f"{e['card_id']}\t{json.dumps(e)}\n" for e in backlog[:events]).encode()
            )
            producer.close()
            return source, out

        def flink_variant(
            variant: str, module: str, events: int, env: dict[str, str], *,
            latency: bool = True, rate_of: str | None = None, exactly_once: bool = True,
        ) -> None:  # fmt: skip
            """Submit, measure events/s over the backlog, then (with `latency`) the latency at
            half of `rate_of`'s events/s (this variant's when None) with its checkpoints (and,
            for an `exactly_once` sink, where the wait goes), then cancel."""
            source, out = prepare(variant, events)
            env = {
                **base_env, **env,
                "RTML_SCORING_FEATURESET": definitions[variant]["name"],
                "RTML_SCORING_ID_PREFIX": f"bench-{variant}",
                "RTML_FEATURES_ID_PREFIX": f"bench-{variant}",
                "RTML_SCORING_PREDICTIONS_TOPIC": out,
            }  # fmt: skip
            argv = flinkrest.submit_argv(
                flinkrest.flink_bin(PYFLINK_HOME), module,
                cluster=f"127.0.0.1:{settings.flink_rest_port}", python=settings.python,
                detached=True,
                job_args={
                    "jobs.scoring": [model], "jobs.features": [definitions[variant]["name"]]
                }.get(module, ["stock-job", model]),
            )  # fmt: skip
            job_id = flinkrest.submit(argv, {**env, **stack.flink_client_env()}, detached=True)
            assert job_id is not None
            try:
                results["throughput"][variant] = watch(bootstrap, out, events)
                print(variant, results["throughput"][variant], flush=True)
                if latency:
                    rate = half_rate(results, rate_of or variant)
                    since_ms = wall_ms()
                    visible_and_sent: list[tuple[int, int]] = []
                    results["latency"][variant] = measure_latency(
                        bootstrap, jars, source, out, rate, args.latency_seconds,
                        folder / f"{variant}-latency.log", visible_and_sent,
                    )  # fmt: skip
                    # What an exactly-once prediction waits for beyond the interval.
                    overview = rest.checkpoints(job_id)
                    stats = checkpoint_stats(overview, since_ms)
                    if stats is not None:
                        slowest = max(
                            checkpoints_since(overview, since_ms),
                            key=lambda c: c["end_to_end_duration"],
                        )
                        stats["slowest_by_operator_ms"] = slowest_operators(
                            rest, job_id, slowest["id"]
                        )
                    if stats is not None and exactly_once:
                        stats["exactly_once_wait"] = exactly_once_wait(
                            visible_and_sent, overview, since_ms
                        )
                    if stats is not None and not exactly_once:
                        triggered = checkpoints_since(overview, since_ms, completed=False)
                        stats["tail"] = tail_near_checkpoints(
                            visible_and_sent,
                            [c["trigger_timestamp"] for c in triggered],
                            AT_LEAST_ONCE_P99_MS,
                        )
                    results["latency"][variant]["checkpoints"] = stats
                    print(variant, results["latency"][variant], flush=True)
            finally:
                rest.cancel(job_id)
                rest.wait_for_state(job_id, {"CANCELED", "FAILED", "FINISHED"}, timeout_s=120)

        def run_loop() -> None:
            """(c): its own process, so its CPU is not the measuring threads' GIL."""
            source, out = prepare("loop", args.events)
            spawn = multiprocessing.get_context("spawn")
            stop = spawn.Event()
            loop = spawn.Process(
                target=hand_written_loop, args=(bootstrap, url, model, source, out, stop),
                daemon=True,
            )  # fmt: skip
            loop.start()
            try:
                results["throughput"]["loop"] = watch(bootstrap, out, args.events)
                print("loop", results["throughput"]["loop"], flush=True)
                rate = half_rate(results, "loop")
                results["latency"]["loop"] = measure_latency(
                    bootstrap, jars, source, out, rate, args.latency_seconds, folder / "loop.log"
                )
                print("loop", results["latency"]["loop"], flush=True)
            finally:
                stop.set()
                loop.join(timeout=30)
                if loop.is_alive():
                    loop.kill()

        def run_stalled() -> None:
            """(a) at-least-once, the model server stalled: the fallback model answers."""
            with StubV2Server(model=model, version="1") as stub:
                stub.set_behaviour(mode="sleep", sleep_ms=STALL_SLEEP_MS)
                flink_variant(
                    "stalled", "jobs.scoring", args.stall_events,
                    {"RTML_SCORING_DELIVERY": "at-least-once", "RTML_MODEL_URL": stub.url,
                     "RTML_SCORING_FALLBACK_MODEL": str(published)},
                    rate_of="rtml_alo", exactly_once=False,
                )  # fmt: skip
                stalled = results["latency"]["stalled"]
                stalled["stub_infer_requests"] = stub.stats()["infer_requests"]

        if "features" in variants:
            flink_variant("features", "jobs.features", args.events, {}, latency=False)
        if "rtml_eo" in variants:
            flink_variant("rtml_eo", "jobs.scoring", args.events, {})
        if "rtml_alo" in variants:
            flink_variant(
                "rtml_alo", "jobs.scoring", args.events,
                {"RTML_SCORING_DELIVERY": "at-least-once"}, exactly_once=False,
            )  # fmt: skip
        if "stock" in variants:
            flink_variant("stock", "bench.scoring", args.stock_events, {})
        if "loop" in variants:
            run_loop()
        if "stalled" in variants:
            run_stalled()
    finally:
        stack.down()
        shutil.rmtree(settings.model_repo / model, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)

    results["machine"]["load_average_1m_at_end"] = os.getloadavg()[0]
    results["minutes"] = round((time.monotonic() - started) / 60, 1)
    results.update(judge(results, checkpoint_ms, deadline_ms))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


def chosen_variants(names: str) -> list[str]:
    """The variants of a comma-separated list, in run order; unknown names and a stalled run
    without the at-least-once run it takes its rate from are errors (pure)."""
    chosen = {name.strip() for name in names.split(",") if name.strip()}
    unknown = chosen - set(VARIANTS)
    if unknown or not chosen:
        raise SystemExit(f"--variants: choose from {', '.join(VARIANTS)}, not {names!r}")
    if "stalled" in chosen and "rtml_alo" not in chosen:
        raise SystemExit("--variants: stalled runs at rtml_alo's half rate: add rtml_alo")
    return [name for name in VARIANTS if name in chosen]


def judge(results: dict, checkpoint_ms: float, deadline_ms: float) -> dict:
    """Ratios (of rates measured over `SUSTAINED_CHECKPOINTS` checkpoint intervals or more), and
    issue #4's targets next to the measured values (pure)."""
    short = unsustained(results, checkpoint_ms)
    rate = {
        name: None if name in short else run["events_per_s"]
        for name, run in results["throughput"].items()
    }
    p99 = {name: run["latency_ms"].get("p99") for name, run in results["latency"].items()}
    ratios = {
        "rtml_vs_stock": _ratio(rate.get("rtml_eo"), rate.get("stock"), 1),
        "rtml_vs_loop": _ratio(rate.get("rtml_eo"), rate.get("loop")),
        "rtml_at_least_once_vs_loop": _ratio(rate.get("rtml_alo"), rate.get("loop")),
        "p99_rtml_vs_stock": _ratio(p99.get("rtml_eo"), p99.get("stock")),
        "p99_rtml_at_least_once_vs_loop": _ratio(p99.get("rtml_alo"), p99.get("loop")),
    }
    stalled = results["latency"].get("stalled", {})
    # the pipeline's own share of the stalled p99: the healthy at-least-once run's p99 minus its
    # scoring latency (what the deadline replaces while the server is stalled)
    healthy = results["latency"].get("rtml_alo", {})
    overhead = None
    if p99.get("rtml_alo") is not None and healthy.get("scoring_latency_ms"):
        overhead = round(p99["rtml_alo"] - healthy["scoring_latency_ms"]["p99"], 1)
    stalled_limit = None if overhead is None else deadline_ms + STALLED_SLACK_MS + overhead
    scoring_p99 = stalled.get("scoring_latency_ms", {}).get("p99")
    eo_limit = checkpoint_ms + EXACTLY_ONCE_SLACK_MS
    return {
        "ratios": ratios,
        "unsustained": {
            variant: f"measured over {results['throughput'][variant].get('measured_s')} s, "
            f"less than {SUSTAINED_CHECKPOINTS} checkpoint intervals: its events/s is left out of "
            "the ratios (use a longer --events)"
            for variant in short
        },
        "targets": [
            target(
                "events/s rtml / stock per-record",
                f">= {STOCK_RATIO_TARGET:g}",
                ratios["rtml_vs_stock"],
                _at_least(ratios["rtml_vs_stock"], STOCK_RATIO_TARGET),
            ),
            target(
                "events/s rtml / hand-written loop",
                f">= {LOOP_RATIO_TARGET:g}",
                ratios["rtml_vs_loop"],
                _at_least(ratios["rtml_vs_loop"], LOOP_RATIO_TARGET),
            ),
            target(
                "p99 ms, rtml exactly-once, half max rate",
                f"< checkpoint interval + {EXACTLY_ONCE_SLACK_MS:g} = {eo_limit:g}",
                p99.get("rtml_eo"),
                _below(p99.get("rtml_eo"), eo_limit),
            ),
            target(
                "p99 ms, rtml at-least-once, half max rate",
                f"< {AT_LEAST_ONCE_P99_MS:g}",
                p99.get("rtml_alo"),
                _below(p99.get("rtml_alo"), AT_LEAST_ONCE_P99_MS),
            ),
            target(
                "p99 ms of the scoring step (latency_ms), server stalled",
                f"< deadline + {STALLED_SLACK_MS:g} = {deadline_ms + STALLED_SLACK_MS:g}",
                scoring_p99,
                _below(scoring_p99, deadline_ms + STALLED_SLACK_MS),
            ),
            target(
                "p99 ms end to end, at-least-once, server stalled",
                f"< deadline + {STALLED_SLACK_MS:g} + pipeline overhead ({overhead} ms: the "
                "healthy at-least-once p99 minus its scoring p99)"
                + ("" if stalled_limit is None else f" = {stalled_limit:g}"),
                p99.get("stalled"),
                _below(p99.get("stalled"), stalled_limit),
            ),
        ],  # fmt: skip
    }


def _ratio(a: float | None, b: float | None, digits: int = 2) -> float | None:
    return None if a is None or not b else round(a / b, digits)


def _at_least(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit


def _below(value: float | None, limit: float | None) -> bool | None:
    return None if value is None or limit is None else value < limit


if __name__ == "__main__":
    if sys.argv[1:2] == ["stock-job"]:
        stock_job(sys.argv[2])
    else:
        main()
