"""`rtml backtest` over a long generated history: events/s, command-to-report time, and how much
faster than replaying the same events through the live streaming job.

    .venv/bin/python -m bench.backtest [--events 1000000] [--evaluate 0.8] [--train-events 5000]
        [--no-live] [--out bench/results/backtest.json]

On a throw-away stack of its own (Kafka, the model server, and a Flink session cluster only for
the live job; free loopback ports, a temporary folder):

1. History: `--events` seeded fraud transactions (`rtml.generators.fraud`, training's rate and
   fraud fraction: `rtml.training.fraud.DEFAULT_RATE`, `DEFAULT_FRAUD_FRACTION`) ending now, on
   fraud_card's source topic with their event time as Kafka timestamp
   (`rtml.training.fraud.generated_records`, kafka-python: Kafka's console producer cannot set
   record timestamps), and their labels on the labels topic. Producing is timed but is not part
   of the backtest.
2. Models, under a private model name (removed from the shared model repository afterwards):
   production = `rtml train fraud --model-name NAME` (published; its fallback folder is
   RTML_SCORING_FALLBACK_MODEL for the backtest and the live job alike), candidate = `rtml train
   fraud --no-publish` with another seed.
3. Backtest: `rtml backtest NAME --candidate DIR --from T --no-timeouts --no-parity --out DIR` as
   a subprocess, T such that the last `--evaluate` share of the history's event time is
   evaluated (the feature set's warm-up before T is read too). Wall time = command to exit (the
   report written); phases (start-up and checks, planning the feature query, the Flink feature
   run, scoring, joins + metrics + report, exit) from when `rtml backtest`'s own output lines
   appeared. Parity is skipped: no live feature job ran over the history.
4. Real time: replaying the history in real time takes its event-time span; ratio = span /
   backtest wall time (also given for the evaluated span alone, the strictest reading).
5. Live catch-up (skip with `--no-live`): `rtml submit scoring NAME --detached` under a fresh
   id prefix (so it reads from the earliest offset; it computes the features itself), timed
   from the command until its predictions topic holds one prediction per event (end offsets
   polled every 0.2 s: the exactly-once sink writes as it goes), then cancelled. Ratio = the
   backtest's evaluated events/s / the live job's events/s, both command to end.

The targets of issue #5 are written next to the measured values, with the load averages and
the machine's cores: everything shares this machine, so read a run on a busy machine as a bound.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

# issue #5's targets
EVENTS_PER_S_TARGET = 50_000.0
REAL_TIME_RATIO_TARGET = 10.0
CANDIDATE_SEED = 1  # production is trained with seed 0, the history is generated with --seed

# `rtml backtest` prints these lines as its phases end (the scoring phase: its last progress line)
PHASE_MARKERS = (
    ("start_checks_and_range", re.compile(r"^backtest \w+: ")),
    ("plan_query", re.compile(r"^features: ")),  # its first progress line: the Flink run starts
    ("features", re.compile(r"^computed features of ")),
    ("scoring", re.compile(r"^scoring: [\d,]+/[\d,]+ events \(100%\)")),
    ("joins_metrics_and_report", re.compile(r"^wrote ")),
)
FEATURES_LINE = re.compile(r"^computed features of ([\d,]+) events in ([\d.]+) s")

Line = tuple[float, str]  # (time.monotonic() when the line was read, the line)


# -- pure ----------------------------------------------------------------------------------------


def evaluated_from_ms(first_ms: int, last_ms: int, evaluate: float) -> int:
    """Start of the evaluated range: the last `evaluate` share (0 < evaluate <= 1) of the
    history's event time (pure)."""
    if not 0.0 < evaluate <= 1.0:
        raise ValueError(f"--evaluate is a share of the history in (0, 1], not {evaluate}")
    return first_ms + int((last_ms - first_ms) * (1.0 - evaluate))


def phase_seconds(lines: Sequence[Line], started: float, ended: float) -> dict[str, float | None]:
    """How long each phase of `rtml backtest` took, from when its closing line appeared (pure).

    A phase runs from the end of the previous one; a phase whose line never appeared is None and
    the next one is measured from the last phase found. `exit` is the last line to the process's
    end (interpreter shutdown).
    """
    out: dict[str, float | None] = {}
    previous = started
    for name, marker in PHASE_MARKERS:
        times = [at for at, line in lines if marker.search(line)]
        if not times:
            out[name] = None
            continue
        at = times[-1] if name == "scoring" else times[0]
        out[name] = round(at - previous, 2)
        previous = at
    out["exit"] = round(ended - previous, 2)
    return out


def features_run(lines: Sequence[Line]) -> dict[str, float] | None:
    """The feature run's own report ('computed features of N events in S s'), if printed."""
    for _, line in lines:
        match = FEATURES_LINE.search(line)
        if match:
            return {"rows": int(match.group(1).replace(",", "")), "seconds": float(match.group(2))}
    return None


def target(name: str, wanted: float, measured: float | None) -> dict[str, Any]:
    met = None if measured is None else measured >= wanted
    return {"target": name, "wanted": f">= {wanted:g}", "measured": measured, "met": met}


def judge(backtest: dict[str, Any], history: dict[str, Any], live: dict[str, Any] | None) -> dict:
    """Ratios, and issue #5's targets next to the measured values (pure)."""
    wall = backtest["wall_s"]
    ratios: dict[str, float | None] = {
        "real_time_replay": round(history["span_s"] / wall, 1),
        "real_time_replay_evaluated_span_only": round(backtest["evaluated_span_s"] / wall, 1),
        "live_catch_up": None,
    }
    if live is not None:
        ratios["live_catch_up"] = round(backtest["events_per_s"] / live["events_per_s"], 2)
    return {
        "ratios": ratios,
        "targets": [
            target(
                "backtest events/s (evaluated events / command-to-report wall time)",
                EVENTS_PER_S_TARGET, backtest["events_per_s"],
            ),
            target(
                "x faster than replaying the history through the live job in real time "
                "(event-time span / backtest wall time)",
                REAL_TIME_RATIO_TARGET, ratios["real_time_replay"],
            ),
        ],
    }  # fmt: skip


# -- I/O ----------------------------------------------------------------------------------------


def load_averages() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def rtml(env: Mapping[str, str], *args: str) -> str:
    """Run `rtml ARGS` with the stack's environment; its stdout, or an error with its output."""
    done = subprocess.run(
        [sys.executable, "-m", "rtml.cli", *args], env=dict(env), capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(
            f"rtml {' '.join(args)} failed ({done.returncode}):\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        )
    return done.stdout


def run_timed(
    argv: Sequence[str], env: Mapping[str, str], timeout_s: float
) -> tuple[int | None, list[Line], float, float]:
    """Run argv; every stdout and stderr line with the moment it was read (the child runs
    unbuffered), also echoed to stderr as it comes (the progress of a long run). Returns (exit
    code, None if killed after `timeout_s`; lines; started; ended), the last two as
    time.monotonic() at the start and at the exit."""
    lines: list[Line] = []
    lock = threading.Lock()
    started = time.monotonic()
    process = subprocess.Popen(
        list(argv), env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def read(stream: Any) -> None:
        for line in stream:
            with lock:
                lines.append((time.monotonic(), line.rstrip("\n")))
                print(f"  | {line}", end="", file=sys.stderr, flush=True)

    readers = [
        threading.Thread(target=read, args=(pipe,), daemon=True)
        for pipe in (process.stdout, process.stderr)
    ]
    for reader in readers:
        reader.start()
    code: int | None
    try:
        code = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        code = None
    ended = time.monotonic()
    for reader in readers:
        reader.join(timeout=10)
    lines.sort(key=lambda item: item[0])
    return code, lines, started, ended


def produce_history(
    bootstrap: str, topic: str, partitions: int, events: int, seed: int, fraud_fraction: float
) -> dict[str, Any]:
    """The transactions (event-time Kafka timestamps, history ending now) and their labels."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    from rtml import generate, kafka_admin
    from rtml.generators import as_records, fraud
    from rtml.training.fraud import DEFAULT_RATE, generated_records

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-backtest")
    try:  # retention.ms=-1: a history of days is kept whatever the broker's retention
        admin.create_topics([NewTopic(topic, partitions, 1, topic_configs={"retention.ms": "-1"})])
    finally:
        admin.close()
    kafka_admin.ensure_topics(bootstrap, {fraud.LABELS_TOPIC: partitions})
    span_ms = int(events * 1000 / DEFAULT_RATE)
    start_ms = int(time.time() * 1000) - span_ms

    def transactions() -> Iterator[dict[str, object]]:
        return fraud.iter_events(
            events, seed=seed, start_ms=start_ms, rate=DEFAULT_RATE, fraud_fraction=fraud_fraction
        )

    times: list[int] = []

    def noting_times(stream: Iterable[dict[str, object]]) -> Iterator[dict[str, object]]:
        first = last = None
        for event in stream:
            ts = int(str(event["ts"]))
            first = ts if first is None else min(first, ts)
            last = ts if last is None else max(last, ts)
            yield event
        times.extend([first or start_ms, last or start_ms])

    started = time.monotonic()
    sent = generate.produce(bootstrap, topic, generated_records(noting_times(transactions())))
    transactions_s = time.monotonic() - started
    started = time.monotonic()
    labels = fraud.labels(transactions(), seed=seed)
    generate.produce(bootstrap, fraud.LABELS_TOPIC, as_records(labels, fraud.key_of))
    labels_s = time.monotonic() - started
    first_ms, last_ms = times
    return {
        "events": sent,
        "seed": seed,
        "rate_events_per_s_of_event_time": DEFAULT_RATE,
        "fraud_fraction": fraud_fraction,
        "first_event_ms": first_ms,
        "last_event_ms": last_ms,
        "span_s": round((last_ms - first_ms) / 1000, 1),
        "span_days": round((last_ms - first_ms) / 86_400_000, 2),
        "labels": len(labels),
        "produce": {
            "how": "kafka-python (rtml.generate.produce), Kafka timestamp = event time; "
            "not part of the backtest",
            "transactions_s": round(transactions_s, 1),
            "transactions_per_s": round(sent / transactions_s),
            "labels_s": round(labels_s, 1),
        },
    }


def run_backtest(
    env: Mapping[str, str], model: str, candidate: Path, from_ms: int, out: Path,
    timeout_s: float,
) -> dict[str, Any]:  # fmt: skip
    argv = [
        sys.executable, "-m", "rtml.cli", "backtest", model, "--candidate", str(candidate),
        "--from", str(from_ms), "--no-timeouts", "--no-parity", "--out", str(out),
    ]  # fmt: skip
    load_before = load_averages()
    code, lines, started, ended = run_timed(argv, env, timeout_s)
    wall_s = ended - started
    if code != 0:
        tail = "\n".join(line for _, line in lines[-30:])
        why = f"killed after {timeout_s:.0f} s" if code is None else f"exit code {code}"
        raise RuntimeError(f"rtml backtest failed ({why}):\n{tail}")
    summary = json.loads((out / "summary.json").read_text())
    events = int(summary["events"])
    records_read = int(summary["range"]["offsets_read"])
    return {
        "command": " ".join(["rtml", *argv[3:]]),
        "wall_s": round(wall_s, 2),
        "events_evaluated": events,
        "records_read": records_read,
        "warm_up_records": records_read - events,
        "events_per_s": round(events / wall_s),
        "records_per_s": round(records_read / wall_s),
        "evaluated_span_s": None,  # filled in by the caller, which knows the history
        "summary_elapsed_s": summary.get("elapsed_s"),
        "phases_s": phase_seconds(lines, started, ended),
        "feature_run": features_run(lines),
        "dead_letters": summary.get("dead_letters"),
        "models": [
            {
                "name": m["name"],
                "role": m["role"],
                "version": m["version"],
                "scorer": m.get("scorer"),
            }
            for m in summary["models"]
        ],
        "ranking": summary.get("metrics", {}).get("ranking"),
        "labels": summary.get("labels"),
        "load_average_before": load_before,
        "load_average_after": load_averages(),
    }


def run_live(
    env: Mapping[str, str], rest_url: str, bootstrap: str, model: str, topic: str, events: int,
    timeout_s: float,
) -> dict[str, Any]:  # fmt: skip
    """The live scoring job from the earliest offset until `events` predictions are on `topic`."""
    from bench.features import stop
    from bench.scoring import watch
    from rtml.flinkrest import FlinkRest

    load_before = load_averages()
    started = time.monotonic()
    job_id = rtml(env, "submit", "scoring", model, "--detached").strip().splitlines()[-1]
    submitted_s = time.monotonic() - started
    try:
        watched = watch(bootstrap, topic, events, limit_s=timeout_s)
    finally:
        stop(FlinkRest(rest_url), job_id)
    total_s = submitted_s + watched["seconds_to_all"]
    return {
        "command": f"rtml submit scoring {model} --detached",
        "events": events,
        "submit_s": round(submitted_s, 1),
        "command_to_all_predictions_s": round(total_s, 1),
        "events_per_s": round(events / total_s),
        "steady_events_per_s": watched["events_per_s"],
        "load_average_before": load_before,
        "load_average_after": load_averages(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="transactions of history")
    parser.add_argument("--seed", type=int, default=7, help="the history's seed")
    parser.add_argument(
        "--evaluate", type=float, default=0.8, help="share of the history's event time evaluated"
    )
    parser.add_argument("--train-events", type=int, default=5000, help="per trained model")
    parser.add_argument("--no-live", action="store_true", help="skip the live job's catch-up")
    parser.add_argument("--backtest-timeout-s", type=float, default=7200)
    parser.add_argument("--live-timeout-s", type=float, default=3600)
    parser.add_argument("--out", type=Path, default=Path("bench/results/backtest.json"))
    args = parser.parse_args()
    if args.events < 1:
        parser.error("--events must be at least 1")
    try:  # a bad --evaluate fails before the stack starts
        evaluated_from_ms(0, 1, args.evaluate)
    except ValueError as error:
        parser.error(str(error))

    from rtml import featuresets
    from rtml.settings import ephemeral_stack_settings, settings_env
    from rtml.stack import Stack
    from rtml.training.fraud import DEFAULT_FRAUD_FRACTION

    run = uuid.uuid4().hex[:6]
    model = f"bench_backtest_{run}"  # private: the model repository is shared by every stack
    predictions = f"rtml.predictions.{model}"
    definition = featuresets.load("fraud_card")
    started = time.monotonic()
    report: dict[str, Any] = {
        "benchmark": "rtml backtest fraud over a generated history: features (fraud_card SQL on "
        "the embedded MiniCluster, with warm-up), a candidate and production scored through the "
        "live job's scorer, labels joined, metrics and report",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": load_averages(),
        },
        "settings": {
            "events": args.events,
            "evaluate_share": args.evaluate,
            "train_events": args.train_events,
            "model": model,
            "featureset": definition.name,
            "parallelism": 1,
        },
    }
    with tempfile.TemporaryDirectory(prefix="rtml-bench-backtest-") as tmp:
        folder = Path(tmp)
        settings = ephemeral_stack_settings(folder / "stack")
        stack = Stack(settings)
        env = {
            **os.environ, **settings_env(settings),
            "RTML_SCORING_PREDICTIONS_TOPIC": predictions,
            "RTML_SCORING_ID_PREFIX": f"bench-backtest-{run}",
        }  # fmt: skip
        try:
            # Flink's session cluster only for the live job: idle, it would still take CPU.
            stack.up(["kafka", "model-server"])
            history = produce_history(
                settings.kafka_bootstrap, definition.source.topic, definition.source.partitions,
                args.events, args.seed, DEFAULT_FRAUD_FRACTION,
            )  # fmt: skip
            report["history"] = history
            print("history", json.dumps(history["produce"]), flush=True)

            production_dir, candidate_dir = folder / "production-training", folder / "candidate"
            print(f"training production ({model} version 1) and a candidate", flush=True)
            timed = time.monotonic()
            rtml(env, "train", "fraud", "--out", str(production_dir), "--model-name", model,
                 "--events", str(args.train_events))  # fmt: skip
            production_s = time.monotonic() - timed
            timed = time.monotonic()
            rtml(env, "train", "fraud", "--out", str(candidate_dir), "--no-publish",
                 "--model-name", model, "--events", str(args.train_events),
                 "--seed", str(CANDIDATE_SEED))  # fmt: skip
            report["training_s"] = {
                "production": round(production_s, 1),
                "candidate": round(time.monotonic() - timed, 1),
            }
            # The production model's fallback, for the backtest and the live job alike.
            env["RTML_SCORING_FALLBACK_MODEL"] = str(production_dir / "fallback")

            from_ms = evaluated_from_ms(
                history["first_event_ms"], history["last_event_ms"], args.evaluate
            )
            print(f"rtml backtest from {from_ms} (epoch ms)", flush=True)
            backtest = run_backtest(
                env, model, candidate_dir, from_ms, folder / "backtest", args.backtest_timeout_s,
            )  # fmt: skip
            backtest["evaluated_span_s"] = round((history["last_event_ms"] - from_ms) / 1000, 1)
            report["backtest"] = backtest
            print(
                f"backtest: {backtest['wall_s']} s, {backtest['events_per_s']} events/s", flush=True
            )

            live = None
            if not args.no_live:
                stack.up(["flink-taskmanager"])
                print("the live scoring job over the same history", flush=True)
                live = run_live(
                    env, settings.flink_rest_url, settings.kafka_bootstrap, model, predictions,
                    history["events"], args.live_timeout_s,
                )  # fmt: skip
                report["live"] = live
                print("live", live["command_to_all_predictions_s"], "s", flush=True)
            report.update(judge(backtest, history, live))
        finally:
            stack.down()
            shutil.rmtree(settings.model_repo / model, ignore_errors=True)
    report["machine"]["load_average_at_end"] = load_averages()
    report["minutes"] = round((time.monotonic() - started) / 60, 1)
    report["method"] = {
        "events_per_s": "events evaluated (inside --from, warm-up excluded) / wall time from the "
        "`rtml backtest` command to its exit (summary.json and report.html written); "
        "records_per_s counts the warm-up records read too",
        "real_time_replay": "the history's event-time span / backtest wall time: replaying the "
        "history through the live job in real time takes its span",
        "live_catch_up": "backtest events/s / the live scoring job's events/s over the same "
        "backlog from the earliest offset, both from the command to the end (start-up included)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
