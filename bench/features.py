"""The fraud_card feature job: sustained throughput (Redis on and off) and freshness in Redis.

    .venv/bin/python -m bench.features [--events 300000] [--rate 10000] [--seconds 60]
        [--warm-up 30] [--sample 50] [--conf KEY=VALUE ...] [--only throughput|freshness]
        [--no-windows] [--out bench/results/features.json]

Starts a throw-away stack of its own (Kafka, Redis, Flink session cluster on free loopback ports,
in a temporary folder) and measures, on it:

- throughput: a backlog of generated transactions, then the job twice, side by side (Redis
  writer on, then off), each from the earliest offset under its own consumer group. The rate is
  how fast the job's output on the features topic grows between 20% and 100% of the backlog
  (start-up left out), read as the topic's high watermarks: the exactly-once sink writes records
  as it goes and commits them at checkpoints, so the uncommitted end offsets follow the job
  continuously. The two branches share one source, so the Redis branch's backpressure slows both.
  With Redis on, the run ends only once Redis holds every card's newest value (the writer runs in
  a task of its own and can be behind the Kafka sink); `redis_behind_kafka_s` is by how much.
  `events_per_s_by_tenth` has the rate in each tenth of the backlog after the first: it is not
  flat (the JVM compiles the job's code in its first tens of seconds; state grows with history).
- freshness: the job (Redis on) on topics of its own; transactions produced at a fixed rate with
  `ts` = the wall clock at sending; 1 event in `--sample` is remembered (card, ts). A poller reads
  those cards' `tx_count_1m` from Redis every 10 ms (one pipeline) and records when the stored
  event time first reaches the sample's: freshness = that moment - ts, i.e. produced -> visible
  in Redis, including Kafka, the job and the Python writer. A newer event of the same card counts
  too (its values supersede the sample's). Percentiles are over the samples seen; samples not seen
  10 s after the run are counted as `unseen`. Before measuring, the job runs `--warm-up` seconds
  at the same rate (after its first values reach Redis), then drains what queued: each job's
  classes are compiled anew by the JIT, which takes up to half a core for tens of seconds. The
  events go through Kafka's Java console producer (linger 5 ms), fed from Python: kafka-python
  reached only 3.6k events/s on a loaded 2-core box.

`--no-windows` runs the same job with fraud_card's query replaced by a stateless stand-in with the
same columns (bench/sql/fraud_card_no_windows.sql): what the source, the Kafka sink and the Redis
writer allow on this machine with windows that cost nothing, i.e. the ceiling of any window
function here.

`--conf` sets Flink options for this run (e.g. python.fn-execution.bundle.time=100) on a copy of
flink-conf/config.yaml. Everything runs on this machine: the producer and the poller compete with
Kafka, Flink and Redis for its cores, so compare the variants of one run, not runs of different
days.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import redis
import yaml

from rtml import featuresets, flinkconf, generate, kafka_admin, kafka_io
from rtml.flinkrest import FlinkRest
from rtml.generators import GENERATORS, as_records
from rtml.online_store import feature_key, stored_event_ms, wall_clock_ms
from rtml.settings import PROJECT_ROOT, ephemeral_stack_settings, settings_env
from rtml.stack import Stack

FRESH_NAME = "fraud_card_fresh"  # the freshness run's copy of fraud_card, with its own topics
NO_WINDOWS_QUERY = PROJECT_ROOT / "bench" / "sql" / "fraud_card_no_windows.sql"
POLL_INTERVAL_S = 0.01
PROBE_FEATURE = "tx_count_1m"


def end_offsets(bootstrap: str, topic: str) -> int:
    """Sum of the partitions' high watermarks (uncommitted records included)."""
    return sum(kafka_io.end_offsets(bootstrap, topic).values())


def submit(env: dict[str, str], featureset: str) -> str:
    submitted = subprocess.run(
        [sys.executable, "-m", "rtml.cli", "submit", "features", featureset, "--detached"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if submitted.returncode != 0:
        raise RuntimeError(f"submitting the feature job failed:\n{submitted.stderr[-3000:]}")
    return submitted.stdout.strip().splitlines()[-1]


def stop(rest: FlinkRest, job_id: str) -> None:
    rest.cancel(job_id)
    rest.wait_for_state(job_id, {"CANCELED", "FAILED", "FINISHED"}, timeout_s=120)


def poll_progress(
    bootstrap: str, topic: str, events: int, limit_s: float, before: int = 0
) -> list[tuple[float, int]]:
    """(seconds since called, records on `topic` beyond `before`) every 0.2 s, until `events` are
    there or `limit_s` ends."""
    started = time.monotonic()
    progress: list[tuple[float, int]] = []
    while time.monotonic() - started < limit_s:
        progress.append((time.monotonic() - started, end_offsets(bootstrap, topic) - before))
        if progress[-1][1] >= events:
            break
        time.sleep(0.2)
    return progress


def backlog_rate(events: int, at_20_percent: float, at_100_percent: float) -> int | None:
    """events/s between 20% and 100% of a backlog arriving; None when both were seen in one poll
    (a small backlog): the rate is then unknown, not huge (pure)."""
    seconds = at_100_percent - at_20_percent
    return round(0.8 * events / seconds) if seconds > 0 else None


def reached_at(progress: list[tuple[float, int]], events: int) -> float | None:
    """The first poll's seconds at which `events` were done, from (seconds, events done) polls."""
    return next((t for t, done in progress if done >= events), None)


def rates_by_tenth(progress: list[tuple[float, int]], events: int) -> list[int | None]:
    """events/s in each tenth of the backlog after the first, from (seconds, events done) polls.

    The first tenth holds the job's start-up, so it is left out: the result has nine rates, for
    10-20%, ..., 90-100%. A tenth whose both ends fell in one poll has no rate (None).
    """
    marks = [reached_at(progress, k * events / 10) for k in range(1, 11)]
    rates: list[int | None] = []
    for start, end in zip(marks, marks[1:], strict=False):
        if start is None or end is None or end <= start:
            rates.append(None)
        else:
            rates.append(round(events / 10 / (end - start)))
    return rates


def newest_by_key(events: Iterable[Mapping[str, object]], key_of, newest: dict[str, int]):
    """Yields `events` unchanged, keeping in `newest` each key's newest event time (`ts`)."""
    for event in events:
        key, ts = key_of(event), int(str(event["ts"]))
        if ts > newest.get(key, ts - 1):
            newest[key] = ts
        yield event


def stale_keys(expected: Mapping[str, int], stored: Mapping[str, str | bytes | None]) -> set[str]:
    """The keys whose stored value (None: absent) is older than their expected event time."""
    return {
        key
        for key, ts in expected.items()
        if stored.get(key) is None or stored_event_ms(stored[key]) < ts  # type: ignore[arg-type]
    }


def probe_values(client: redis.Redis, keys: list[str]) -> list[bytes | None]:
    """Each key's stored PROBE_FEATURE value (None: absent), in one pipeline."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, PROBE_FEATURE)
    return pipe.execute()


def wait_for_redis(client: redis.Redis, expected: Mapping[str, int], timeout_s: float) -> set[str]:
    """Polls Redis until every key holds its expected event time, or `timeout_s` ends; returns
    the keys still stale (empty: all written)."""
    pending = dict(expected)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        keys = list(pending)
        stale = stale_keys(pending, dict(zip(keys, probe_values(client, keys), strict=True)))
        pending = {key: pending[key] for key in stale}
        if pending:
            time.sleep(0.05)
    return set(pending)


def run_throughput(
    env: dict[str, str], stack: Stack, topic: str, events: int,
    redis_expected: Mapping[str, int] | None = None,
) -> dict:  # fmt: skip
    """One job over the backlog: events/s between 20% and 100% of it on the features topic and,
    with `redis_expected` (Redis key -> newest event time), until Redis holds every key's newest
    value: the writer may run in a task of its own, behind the Kafka sink.

    Also the rate per tenth of the backlog: the JVM compiles the job's code during the first tens
    of seconds and the windows and RocksDB fill as history grows, so the rate is not flat.
    """
    rest = FlinkRest(stack.settings.flink_rest_url)
    bootstrap = stack.settings.kafka_bootstrap
    before = end_offsets(bootstrap, topic)
    job_id = submit(env, "fraud_card")
    try:
        started = time.monotonic()  # poll_progress's clock starts here too
        progress = poll_progress(bootstrap, topic, events, 1800, before)
        in_redis_at = stale = None
        if redis_expected is not None and progress[-1][1] >= events:
            with redis.Redis(host="127.0.0.1", port=stack.settings.redis_port) as client:
                stale = wait_for_redis(client, redis_expected, timeout_s=120)
            in_redis_at = time.monotonic() - started
    finally:
        stop(rest, job_id)
    at_20_percent, at_all = reached_at(progress, 0.2 * events), reached_at(progress, events)
    if at_all is None:
        raise RuntimeError(f"the job did not finish {events} events in 30 min")
    if stale:
        raise RuntimeError(f"{len(stale)} Redis keys without their newest value, e.g. {min(stale)}")
    # From 20% on the features topic (Redis is not ahead of it) to the last of Kafka and Redis.
    finished_at = max(at_all, in_redis_at or 0.0)
    rate = backlog_rate(events, at_20_percent, finished_at)
    if rate is None:
        raise RuntimeError(f"{events} events arrived within one poll: raise --events")
    result = {
        "events_per_s": rate,
        "seconds_to_all": round(finished_at, 1),
        "events_per_s_by_tenth": rates_by_tenth(progress, events),
    }
    if in_redis_at is not None:
        result["redis_behind_kafka_s"] = round(in_redis_at - at_all, 2)
    return result


def fraud_card_files(folder: Path, *, windows: bool = True) -> Path:
    """fraud_card's definition, source and query copied to `folder`/features and /sources (its
    query replaced by the stand-in without windows unless `windows`); returns the features dir."""
    features_dir, sources_dir = folder / "features", folder / "sources"
    features_dir.mkdir(parents=True)
    sources_dir.mkdir()
    query = PROJECT_ROOT / "sql" / "features" / "fraud_card.sql"
    shutil.copy(query if windows else NO_WINDOWS_QUERY, features_dir / query.name)
    shutil.copy(PROJECT_ROOT / "sql" / "sources" / "fraud_transactions.sql", sources_dir)
    shutil.copy(PROJECT_ROOT / "sql" / "features" / "fraud_card.yaml", features_dir)
    return features_dir


def renamed_fraud_cards(
    folder: Path, names: Mapping[str, str], *, windows: bool = True
) -> tuple[Path, dict[str, dict]]:
    """Copies of fraud_card (the real SQL unless `windows` is off), each a feature set of its own
    name with topics of its own ({name: stem} -> topics `bench.<stem>.*`): the features dir and
    {name: definition}. fraud_card itself is not among them."""
    features_dir = fraud_card_files(folder, windows=windows)
    original = features_dir / "fraud_card.yaml"
    definitions = {}
    for name, stem in names.items():
        definition = yaml.safe_load(original.read_text())
        definition["name"] = name
        definition["features_topic"] = f"bench.{stem}.features"
        definition["source"]["topic"] = f"bench.{stem}.transactions"
        definition["source"]["dead_letter_topic"] = f"bench.{stem}.dead-letter"
        (features_dir / f"{name}.yaml").write_text(yaml.safe_dump(definition))
        definitions[name] = definition
    original.unlink()
    return features_dir, definitions


def fresh_featureset(folder: Path, *, windows: bool = True) -> tuple[Path, dict]:
    """A copy of fraud_card (the real SQL unless `windows` is off) with a name and topics of its
    own."""
    features_dir, copies = renamed_fraud_cards(folder, {FRESH_NAME: FRESH_NAME}, windows=windows)
    return features_dir, copies[FRESH_NAME]


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a sorted, non-empty list."""
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


class Poller(threading.Thread):
    """Reads the pending samples' stored event times every POLL_INTERVAL_S; records when seen."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(name="freshness-poller", daemon=True)
        self.client = client
        self.lock = threading.Lock()
        self.pending: dict[str, list[tuple[int, int]]] = {}  # key -> [(sample id, ts)]
        self.seen: dict[int, int] = {}  # sample id -> freshness ms
        self.polls = 0
        self.stopping = threading.Event()

    def add(self, sample: int, key: str, ts: int) -> None:
        with self.lock:
            self.pending.setdefault(key, []).append((sample, ts))

    def run(self) -> None:
        while not self.stopping.is_set():
            with self.lock:
                keys = list(self.pending)
            if keys:
                stored = probe_values(self.client, keys)
                now = wall_clock_ms()
                self.polls += 1
                with self.lock:
                    for key, value in zip(keys, stored, strict=True):
                        if value is None:
                            continue
                        visible = stored_event_ms(value)
                        waiting = self.pending[key]
                        for sample, ts in [s for s in waiting if s[1] <= visible]:
                            self.seen[sample] = now - ts
                        self.pending[key] = [s for s in waiting if s[1] > visible]
                        if not self.pending[key]:
                            del self.pending[key]
            time.sleep(POLL_INTERVAL_S)


# Kafka's Java tools as the benchmarks' producers and consumers: a small heap, the serial collector
# and the C1 compiler only, so that compiling and collecting take less of the two cores the
# measured job runs on (the tools' work per record is light; C2's start-up compiling is not).
TOOL_JVM_OPTIONS = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")


class ConsoleProducer:
    """Kafka's Java producer (ConsoleProducer) fed `key<TAB>value` lines on its stdin.

    A fraction of kafka-python's CPU per record, which matters on 2 cores shared with the job.
    """

    def __init__(self, bootstrap: str, topic: str, jars: Path, log: Path) -> None:
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            ["java", *TOOL_JVM_OPTIONS, "-cp", f"{jars}/*",
             "org.apache.kafka.tools.ConsoleProducer",
             "--bootstrap-server", bootstrap, "--topic", topic,
             "--reader-property", "parse.key=true", "--reader-property", "key.separator=\t",
             "--producer-property", "linger.ms=5", "--producer-property", "acks=all"],
            stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        assert self.process.stdin is not None
        self.stdin = self.process.stdin

    def close(self) -> None:
        """Send what is left and wait for the producer to exit."""
        try:
            self.stdin.close()
            if self.process.wait(timeout=60) != 0:
                raise RuntimeError(f"ConsoleProducer failed: see {self.log.name}")
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self.log.close()


def produce_now(
    producer: ConsoleProducer, events: object, rate: float, seconds: float, every: int,
    poller: Poller | None, prefix: str,
) -> tuple[int, int, float]:  # fmt: skip
    """Send events at `rate`/s for `seconds` with ts = now; sample 1 in `every` to the poller.

    Returns (sent, sampled, achieved rate). A sender that falls behind timestamps what it
    actually sends.
    """
    started = time.monotonic()
    sent = sampled = 0
    iterator = iter(events)  # type: ignore[call-overload]
    while True:
        elapsed = time.monotonic() - started
        if elapsed >= seconds:
            break
        due = int(elapsed * rate) + 1
        lines = []
        while sent < due:
            event = next(iterator)
            ts = wall_clock_ms()
            event["ts"] = ts
            card = str(event["card_id"])
            lines.append(f"{card}\t{json.dumps(event)}\n")
            if poller is not None and sent % every == 0:
                poller.add(sampled, feature_key(prefix, card), ts)
                sampled += 1
            sent += 1
        producer.stdin.write("".join(lines).encode())
        producer.stdin.flush()
        time.sleep(0.002)
    return sent, sampled, sent / (time.monotonic() - started)


def run_freshness(
    env: dict[str, str], stack: Stack, folder: Path, rate: float, seconds: float, every: int,
    warm_up_s: float, windows: bool = True,
) -> dict:  # fmt: skip
    features_dir, definition = fresh_featureset(folder / "fresh", windows=windows)
    bootstrap = stack.settings.kafka_bootstrap
    topic = definition["source"]["topic"]
    kafka_admin.ensure_topics(
        bootstrap,
        {topic: definition["source"]["partitions"],
         definition["features_topic"]: definition["source"]["partitions"],
         definition["source"]["dead_letter_topic"]: 1},
    )  # fmt: skip
    rest = FlinkRest(stack.settings.flink_rest_url)
    job_env = {**env, "RTML_FEATURES_DIR": str(features_dir), "RTML_FEATURES_ID_PREFIX": "fresh"}
    job_id = submit(job_env, FRESH_NAME)
    client = redis.Redis(host="127.0.0.1", port=stack.settings.redis_port)
    producer = ConsoleProducer(
        bootstrap, topic, stack.settings.jars_dir / "kafka", folder / "console-producer.log"
    )
    events = GENERATORS["fraud"].iter_events(
        int((seconds + warm_up_s + 30) * rate) + 100_000,
        seed=2, start_ms=wall_clock_ms(), rate=rate,
    )  # fmt: skip
    try:
        rest.wait_for_state(job_id, {"RUNNING"}, timeout_s=120)
        # Warm up (Python worker, connections, caches) until values show up in Redis, then
        # `warm_up_s` more at the rate (the JIT compiles the job's classes), then let the
        # warm-up's backlog drain, so the measurement starts from a job that keeps up.
        warm = Poller(client)
        warm.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(warm.seen) <= 10:
            produce_now(producer, events, rate, 5, every, warm, FRESH_NAME)
        if warm.seen and warm_up_s > 0:
            produce_now(producer, events, rate, warm_up_s, every, warm, FRESH_NAME)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and warm.pending:
            time.sleep(0.1)
        warm.stopping.set()
        warm.join()
        if not warm.seen:
            raise RuntimeError("nothing reached Redis during 2 min of warm-up")

        poller = Poller(client)
        poller.start()
        load_before = os.getloadavg()[0]
        sent, sampled, achieved = produce_now(
            producer, events, rate, seconds, every, poller, FRESH_NAME
        )
        load_after = os.getloadavg()[0]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(poller.seen) < sampled:
            time.sleep(0.1)
        poller.stopping.set()
        poller.join()
    finally:
        producer.close()
        client.close()
        stop(rest, job_id)
    values = sorted(poller.seen.values())
    if not values:
        raise RuntimeError("no sample became visible in Redis")

    return {
        "target_events_per_s": rate,
        "achieved_events_per_s": round(achieved),
        "seconds": seconds,
        "events": sent,
        "samples": sampled,
        "seen": len(values),
        "unseen": sampled - len(values),
        "freshness_ms": {
            "p50": percentile(values, 50),
            "p95": percentile(values, 95),
            "p99": percentile(values, 99),
            "max": values[-1],
            "mean": round(statistics.fmean(values), 1),
        },
        "warm_up_s": warm_up_s,
        "poll_interval_ms": POLL_INTERVAL_S * 1000,
        "polls": poller.polls,
        "load_average_1m": {"before": load_before, "after": load_after},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000, help="backlog for throughput")
    parser.add_argument("--rate", type=float, default=10_000, help="events/s for freshness")
    parser.add_argument("--seconds", type=float, default=60, help="freshness measurement time")
    parser.add_argument(
        "--warm-up", type=float, default=30, help="seconds at the rate before measuring freshness"
    )
    parser.add_argument("--sample", type=int, default=50, help="sample 1 event in N")
    parser.add_argument("--conf", action="append", default=[], help="Flink option KEY=VALUE")
    parser.add_argument("--only", choices=["throughput", "freshness"])
    parser.add_argument(
        "--no-windows", action="store_true",
        help="fraud_card's query replaced by a stand-in without windows (the ceiling)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("bench/results/features.json"))
    args = parser.parse_args()
    report: dict = {
        "benchmark": "fraud_card feature job (4 windows per card): throughput and "
        "freshness in Redis",
        "windows": "none: fraud_card's query replaced by bench/sql/fraud_card_no_windows.sql"
        if args.no_windows
        else "fraud_card's SLIDING_WINDOW_FEATURES",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "load_average_1m_at_start": os.getloadavg()[0]},
        "parallelism": 1,
    }
    with tempfile.TemporaryDirectory(prefix="rtml-bench-") as tmp:
        folder = Path(tmp)
        conf_dir = flinkconf.with_overrides(folder, flinkconf.parse_overrides(args.conf))
        settings = ephemeral_stack_settings(folder / "stack", flink_conf_dir=conf_dir)
        report["python_worker"] = {
            k: v
            for k, v in flinkconf.load(settings.flink_conf_dir).items()
            if k.startswith("python.")
        }
        stack = Stack(settings)
        env = {
            **os.environ,
            **settings_env(settings),
        }
        features_dir = featuresets.FEATURES_DIR
        if args.no_windows:
            features_dir = fraud_card_files(folder / "no-windows", windows=False)
            env["RTML_FEATURES_DIR"] = str(features_dir)
        definition = featuresets.load("fraud_card", features_dir)
        try:
            stack.up(["kafka", "redis", "flink-taskmanager"])
            if args.only in (None, "throughput"):
                report["throughput"] = throughput(args, env, stack, definition)
            if args.only in (None, "freshness"):
                freshness = run_freshness(
                    env, stack, folder, args.rate, args.seconds, args.sample, args.warm_up,
                    windows=not args.no_windows,
                )  # fmt: skip
                report["freshness"] = {
                    "method": "events produced at a fixed rate with ts = now; 1 in "
                    f"{args.sample} sampled; a poller reads the sampled cards' "
                    f"{PROBE_FEATURE} from Redis every {POLL_INTERVAL_S * 1000:.0f} ms; "
                    "freshness = first poll whose stored event time >= the sample's ts, minus ts",
                    **freshness,
                }
                print("freshness", json.dumps(report["freshness"]["freshness_ms"]), flush=True)
        finally:
            stack.down()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def throughput(args: argparse.Namespace, env: dict[str, str], stack: Stack, definition) -> dict:
    settings = stack.settings
    fraud = GENERATORS["fraud"]
    backlog = fraud.iter_events(args.events, seed=1, start_ms=1_763_700_000_000, rate=200.0)
    kafka_admin.ensure_topics(
        settings.kafka_bootstrap,
        {definition.source.topic: definition.source.partitions,
         definition.features_topic: definition.source.partitions,
         definition.source.dead_letter_topic: 1},
    )  # fmt: skip
    newest: dict[str, int] = {}
    generate.produce(
        settings.kafka_bootstrap, definition.source.topic,
        as_records(newest_by_key(backlog, fraud.key_of, newest), fraud.key_of),
    )  # fmt: skip
    redis_expected = {feature_key(definition.name, key): ts for key, ts in newest.items()}
    results = {}
    for variant, online in (("redis_and_kafka", "true"), ("kafka_only", "false")):
        variant_env = {**env, "RTML_ONLINE_STORE": online,
                       "RTML_FEATURES_ID_PREFIX": f"bench-{variant}"}  # fmt: skip
        results[variant] = run_throughput(
            variant_env, stack, definition.features_topic, args.events,
            redis_expected if online == "true" else None,
        )  # fmt: skip
        print(variant, results[variant], flush=True)
    return {
        "method": "backlog of generated transactions; job from the earliest offset; events/s "
        "between 20% and 100% of the backlog on the features topic (high watermarks, polled "
        "every 0.2 s) and, with Redis on, until Redis holds every card's newest value (polled "
        "after the topic is complete); Redis on, then off, in the same run",
        "events": args.events,
        **results,
        "redis_writer_cost_ratio": round(
            results["kafka_only"]["events_per_s"] / results["redis_and_kafka"]["events_per_s"], 2
        ),
    }


if __name__ == "__main__":
    main()
