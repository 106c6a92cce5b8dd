"""The `rtml` command: the local stack, job submission and management, test data, topic reading."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from pydantic_settings import BaseSettings

from rtml import flinkrest, generate, statecheck
from rtml.generators import GENERATORS
from rtml.settings import (
    LOOPBACK,
    BacktestSettings,
    FeatureJobSettings,
    SmokeJobSettings,
    StackSettings,
)


def _env_help(*models: type[BaseSettings]) -> str:
    """The environment variables behind the settings, for --help."""
    lines = ["settings (environment variables):"]
    seen: set[str] = set()
    for model in models:
        for name, field in model.model_fields.items():
            env = f"RTML_{name.upper()}"
            if env in seen:
                continue
            seen.add(env)
            default = field.default if field.default is not None else "-"
            about = f"  {field.description}" if field.description else ""
            lines.append(f"  {env:<36} default {default}{about}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtml",
        description="Real-time ML on Apache Flink: local stack, jobs, features, models.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_env_help(StackSettings, SmokeJobSettings, FeatureJobSettings),
    )
    commands = parser.add_subparsers(dest="command", required=True)

    stack = commands.add_parser("stack", help="the local Kafka, Redis, Flink and model server")
    stack_commands = stack.add_subparsers(dest="action", required=True)
    up = stack_commands.add_parser("up", help="start what is not running, wait until healthy")
    up.add_argument(
        "--only", help="comma-separated services (kafka, redis, model-server, flink-jobmanager, "
        "flink-taskmanager); default all",
    )  # fmt: skip
    stack_commands.add_parser("down", help="stop the processes rtml started")
    stack_commands.add_parser("status", help="each service's state, pid, ports and log")

    default_cluster = f"{LOOPBACK}:{StackSettings().flink_rest_port}"
    cluster_help = f"Flink REST address HOST:PORT (default {default_cluster}, the local stack)"

    submit = commands.add_parser("submit", help="submit a job to a Flink session cluster")
    submit.add_argument("job", help="job name under jobs/ (e.g. smoke, features)")
    submit.add_argument(
        "job_args", nargs="*", metavar="ARG", help="the job's own arguments (features: FEATURESET)"
    )
    submit.add_argument("--cluster", default=default_cluster, help=cluster_help)
    submit.add_argument("--from-savepoint", metavar="PATH", help="restore state from a savepoint")
    submit.add_argument(
        "--allow-non-restored-state", action="store_true",
        help="with --from-savepoint: drop state no operator of the new job claims",
    )  # fmt: skip
    submit.add_argument(
        "--detached", action="store_true", help="return once submitted, print the job id"
    )
    submit.add_argument(
        "--backfill", action="store_true",
        help="features: start with empty windows and rebuild them by re-reading the source "
        "topic for the feature set's longest window",
    )  # fmt: skip

    jobs = commands.add_parser("jobs", help="list, stop or cancel jobs on a cluster")
    jobs.add_argument("--cluster", default=default_cluster, help=cluster_help)
    jobs_commands = jobs.add_subparsers(dest="action", required=True)
    jobs_commands.add_parser("list", help="jobs and their states, newest first")
    stop = jobs_commands.add_parser("stop", help="stop a job gracefully")
    stop.add_argument("job_id")
    stop.add_argument(
        "--savepoint", action="store_true", required=True,
        help="take a savepoint as the job stops (required: stopping keeps state)",
    )  # fmt: skip
    stop.add_argument("--savepoint-dir", help="where to write it (default: the cluster's)")
    cancel = jobs_commands.add_parser("cancel", help="cancel a job without a savepoint")
    cancel.add_argument("job_id")

    gen = commands.add_parser(
        "generate", help="send seeded synthetic events (with labelled anomalies) to Kafka"
    )
    gen.add_argument("name", choices=["smoke", *GENERATORS])
    gen.add_argument("--count", type=int, default=1000)
    gen.add_argument(
        "--rate", type=float, default=None,
        help="records per second, sent and of event time (default: as fast as possible)",
    )  # fmt: skip
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--keys", type=int, default=5, help="smoke only: how many keys")
    gen.add_argument("--topic", help="default: the generator's own topic")
    gen.add_argument(
        "--partitions", type=int, default=2, help="for topics rtml creates (fraud, clickstream)"
    )
    gen.add_argument(
        "--start-ms", type=int, default=None, help="event time of the first event (default: now)"
    )

    demo = commands.add_parser(
        "demo",
        help="the fraud pipeline on generated transactions: train (if needed), features, scoring, "
        "flagged transactions (needs `stack up`)",
    )
    demo.add_argument(
        "which", nargs="?", choices=["fraud", "smoke"], default="fraud",
        help="fraud (default): the whole fraud pipeline; smoke: the smoke job's window counts",
    )  # fmt: skip
    demo.add_argument("--events", type=int, default=5000, help="fraud: transactions to send")
    demo.add_argument(
        "--seed", type=int, default=None, help="fraud: generator seed (default: time)"
    )
    demo.add_argument(
        "--train-events", type=int, default=5000, help="fraud: transactions to train on, if needed"
    )

    read = commands.add_parser("read", help="print records of a topic (read_committed)")
    read.add_argument("topic")
    read.add_argument("--max", type=int, default=20, help="stop after this many records")
    read.add_argument("--timeout", type=float, default=5.0, help="stop reading after this many s")

    features = commands.add_parser("features", help="read online features from Redis")
    features_commands = features.add_subparsers(dest="action", required=True)
    get = features_commands.add_parser(
        "get", help="an entity's online features, their event times and ages (exit 3: none)"
    )
    get.add_argument("featureset")
    get.add_argument("entity_id")
    get.add_argument("--json", action="store_true", help="one JSON object (null if none)")

    train = commands.add_parser(
        "train", help="train a model on features computed offline by a feature set's own SQL"
    )
    train_commands = train.add_subparsers(dest="model", required=True)
    train_fraud = train_commands.add_parser(
        "fraud",
        help="fraud_card features of labelled transactions -> primary (gradient boosting) and "
        "fallback (logistic regression) models; publishes the primary to the model server",
    )
    train_fraud.add_argument("--out", required=True, help="folder for primary/ and fallback/")
    train_fraud.add_argument("--events", type=int, default=5000, help="transactions to generate")
    train_fraud.add_argument("--seed", type=int, default=0)
    train_fraud.add_argument(
        "--rate", type=float, default=2.0, help="generated events per second of event time"
    )
    train_fraud.add_argument("--fraud-fraction", type=float, default=0.03)
    train_fraud.add_argument(
        "--topic", help="train on this topic's records instead of generating (with --from/--to, "
        "--offsets or --group; default the whole topic)",
    )  # fmt: skip
    train_fraud.add_argument("--from", dest="from_", metavar="TIME", help="ISO-8601 or epoch ms")
    train_fraud.add_argument("--to", metavar="TIME", help="ISO-8601 or epoch ms (exclusive)")
    train_fraud.add_argument("--offsets", help="PARTITION:START[-END],... (END exclusive)")
    train_fraud.add_argument("--group", help="from this consumer group's committed offsets")
    train_fraud.add_argument(
        "--labels-topic", default="rtml.fraud.labels", help="with --topic: where labels are"
    )
    train_fraud.add_argument("--model-name", default="fraud", help="name on the model server")
    train_fraud.add_argument(
        "--no-publish", action="store_true", help="only write the artifacts under --out"
    )

    backtest = commands.add_parser(
        "backtest",
        help="replay a Kafka range through a feature set's SQL; score candidate models and the "
        "production model with the live job's scorer; compare with labels and recorded "
        "predictions; check training-serving parity",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Writes OUT/frame.parquet, OUT/summary.json and OUT/report.html; reads production "
        "topics only. Exit code 2: the backtest cannot run as asked (the message says why).\n\n"
        + _env_help(BacktestSettings, FeatureJobSettings),
    )
    backtest.add_argument(
        "model", help="the model's name on the model server and in the repository (e.g. fraud)"
    )
    backtest.add_argument(
        "--candidate", action="append", required=True, metavar="DIR", type=Path,
        help="a model folder: `rtml train --out` output (primary/ + fallback/) or one model "
        "(model.joblib + metadata.json); repeat for several",
    )  # fmt: skip
    backtest.add_argument(
        "--production", metavar="VERSION|DIR",
        help="the production model: a version of MODEL in the repository or a folder (default: "
        "the version promoted on the models topic, else the repository's newest)",
    )  # fmt: skip
    backtest.add_argument("--from", dest="from_", metavar="TIME", help="ISO-8601 or epoch ms")
    backtest.add_argument("--to", metavar="TIME", help="ISO-8601 or epoch ms (exclusive)")
    backtest.add_argument("--offsets", help="PARTITION:START[-END],... (END exclusive)")
    backtest.add_argument("--group", help="from this consumer group's committed offsets")
    backtest.add_argument(
        "--featureset", help="feature set to compute (default: RTML_SCORING_FEATURESET)"
    )
    backtest.add_argument("--labels-topic", default="rtml.fraud.labels")
    backtest.add_argument(
        "--labels-until", metavar="TIME",
        help="use only labels reported before this time (default: every label on the topic now)",
    )  # fmt: skip
    backtest.add_argument(
        "--predictions-topic", help="production predictions (default: rtml.predictions.MODEL)"
    )
    backtest.add_argument("--out", type=Path, help="default: .rtml/backtests/RUN_ID/")
    backtest.add_argument(
        "--no-timeouts", action="store_true",
        help="no request timeout or deadline: every model answers from its primary unless it fails",
    )  # fmt: skip
    backtest.add_argument(
        "--run-id", help="names the run's folder, topic and keys (default: random)"
    )
    backtest.add_argument(
        "--output-topic", help="also write candidate predictions here (must contain the run id)"
    )
    backtest.add_argument(
        "--redis-prefix",
        help="also write recomputed features to Redis under this prefix (must contain the run "
        "id, outside rtml:fs:)",
    )  # fmt: skip
    backtest.add_argument(
        "--no-parity", action="store_true", help="skip the check against the features topic"
    )

    models = commands.add_parser("models", help="model versions the scoring jobs use")
    models_commands = models.add_subparsers(dest="action", required=True)
    promote = models_commands.add_parser(
        "promote", help="make VERSION the one running scoring jobs call (no restart)"
    )
    promote.add_argument("model", help="model name on the model server (e.g. fraud)")
    promote.add_argument("version", help="a version the model server serves")
    promote.add_argument(
        "--no-check", action="store_true", help="do not ask the model server whether it serves it"
    )
    models_commands.add_parser(
        "withdraw", help="drop the promotion: jobs go back to their configured version"
    ).add_argument("model")

    shadow = commands.add_parser(
        "shadow",
        help="run a model version live beside production (predictions to a shadow topic only) "
        "and compare the two",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit code 2: the shadow cannot run or be stopped as asked (the message says why). "
        "Promote the candidate with `rtml models promote MODEL VERSION`.",
    )
    shadow_commands = shadow.add_subparsers(dest="action", required=True)
    shadow_start = shadow_commands.add_parser(
        "start", help="submit the scoring job pinned to VERSION, writing rtml.shadow.MODEL.vVERSION"
    )
    shadow_stop = shadow_commands.add_parser("stop", help="cancel the shadow job of VERSION")
    shadow_status = shadow_commands.add_parser(
        "status", help="agreement, score shift, PSI and paths: shadow vs production predictions"
    )
    for parser_ in (shadow_start, shadow_stop, shadow_status):
        parser_.add_argument("model", help="model name on the model server (e.g. fraud)")
        parser_.add_argument("version", help="the candidate version")
    shadow_start.add_argument("--cluster", default=default_cluster, help=cluster_help)
    shadow_start.add_argument(
        "--detached", action="store_true", help="return once submitted (else: until the job "
        "ends; Ctrl-C cancels it)",
    )  # fmt: skip
    shadow_status.add_argument("--json", action="store_true", help="one JSON object per refresh")
    shadow_status.add_argument(
        "--window", type=int, metavar="N", help="the last N events both scored (default: all)"
    )
    shadow_status.add_argument("--follow", action="store_true", help="refresh until Ctrl-C")
    shadow_status.add_argument(
        "--every", type=float, default=5.0, metavar="S", help="with --follow: seconds between"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return HANDLERS[args.command](args)
    except (flinkrest.FlinkError, RuntimeError, ValueError, FileNotFoundError) as error:
        print(f"rtml: error: {error}", file=sys.stderr)
        return 1


def _stack(args: argparse.Namespace) -> int:
    from rtml.stack import Stack

    stack = Stack()
    if args.action == "up":
        only = args.only.split(",") if args.only else None
        started = stack.up(only)
        print(f"started: {', '.join(started) or 'nothing (all running)'}")
        _print_status(stack)
    elif args.action == "down":
        stopped = stack.down()
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    else:
        _print_status(stack)
        return 0 if all(row.state == "healthy" for row in stack.status()) else 3
    return 0


def _print_status(stack: object) -> None:
    rows = stack.status()  # type: ignore[attr-defined]
    print(f"{'SERVICE':<18} {'STATE':<20} {'PID':>7}  {'PORTS':<18} LOG")
    for row in rows:
        ports = ",".join(str(p) for p in row.ports) or "-"
        pid = str(row.pid) if row.pid else "-"
        print(f"{row.name:<18} {row.state:<20} {pid:>7}  {ports:<18} {row.log}")


def _submit(args: argparse.Namespace) -> int:
    from rtml.stack import Stack

    if args.backfill and args.from_savepoint:
        raise SystemExit("error: --backfill starts with empty windows: drop --from-savepoint")

    job_id = Stack().submit(
        args.job,
        cluster=args.cluster,
        detached=args.detached,
        from_savepoint=args.from_savepoint,
        allow_non_restored_state=args.allow_non_restored_state,
        job_args=[*args.job_args, *(["--backfill"] if args.backfill else [])],
    )
    if job_id:
        print(job_id)
    return 0


def _jobs(args: argparse.Namespace) -> int:
    rest = flinkrest.FlinkRest(f"http://{args.cluster}")
    if args.action == "list":
        print(f"{'JOB ID':<34} {'STATE':<12} {'STARTED':<20} NAME")
        for job in rest.jobs():
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.start_time_ms / 1000))
            print(f"{job.job_id:<34} {job.state:<12} {started:<20} {job.name}")
    elif args.action == "stop":
        saved = rest.user_config(args.job_id).get(statecheck.JOB_PARAMETER)
        location = rest.stop_with_savepoint(args.job_id, args.savepoint_dir)
        print(location)
        if saved:  # what the state means, for the check of `rtml submit --from-savepoint`
            written = statecheck.write_saved(location, statecheck.Manifest.from_parameter(saved))
            if written is None:
                note = "its state manifest was not written: resuming from it cannot be checked"
                print(f"note: {location} is not a local folder; {note}", file=sys.stderr)
    else:
        rest.cancel(args.job_id)
        print(f"cancelling {args.job_id}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from rtml import kafka_admin
    from rtml.generators import as_records

    settings = SmokeJobSettings()
    start_ms = args.start_ms if args.start_ms is not None else int(time.time() * 1000)
    if args.name in GENERATORS:
        generator = GENERATORS[args.name]
        topic = args.topic or generator.topic_default
        topics = {topic: args.partitions}
        if generator.labels is not None and generator.labels_topic_default:
            topics[generator.labels_topic_default] = args.partitions
        kafka_admin.ensure_topics(settings.kafka_bootstrap, topics)

        def events() -> Iterator[dict[str, object]]:
            return generator.iter_events(
                args.count, seed=args.seed, start_ms=start_ms, rate=args.rate
            )

        sent = generate.produce(
            settings.kafka_bootstrap, topic, as_records(events(), generator.key_of), rate=args.rate
        )
        print(f"sent {sent} {args.name} events to {topic}")
        if generator.labels is not None and generator.label_key_of is not None:
            # Labels arrive hours to days later in event time; a second pass over the same
            # seeded events keeps memory flat.
            labels = generator.labels(events())
            sent = generate.produce(
                settings.kafka_bootstrap, str(generator.labels_topic_default),
                as_records(labels, generator.label_key_of),
            )  # fmt: skip
            print(f"sent {sent} labels to {generator.labels_topic_default}")
        return 0
    events = generate.smoke_events(
        args.count, keys=args.keys, start_ms=start_ms, seed=args.seed,
        events_per_second=args.rate or 100.0,
    )  # fmt: skip
    kafka_admin.ensure_topics(
        settings.kafka_bootstrap, {settings.smoke_input_topic: settings.smoke_partitions}
    )
    sent = generate.produce(
        settings.kafka_bootstrap, settings.smoke_input_topic, generate.as_records(events),
        rate=args.rate,
    )  # fmt: skip
    print(f"sent {sent} events to {settings.smoke_input_topic}")
    return 0


def _read(args: argparse.Namespace) -> int:
    from rtml.kafka_io import read_committed

    records = read_committed(
        SmokeJobSettings().kafka_bootstrap, args.topic,
        until=lambda records: len(records) >= args.max, timeout_s=args.timeout,
    )  # fmt: skip
    for record in records[: args.max]:
        headers = {k: v.decode(errors="replace") for k, v in record.headers or []}
        shown = {
            "partition": record.partition,
            "offset": record.offset,
            "key": record.key.decode(errors="replace") if record.key else None,
            "value": record.value.decode(errors="replace") if record.value else None,
        }
        print(json.dumps({**shown, **({"headers": headers} if headers else {})}))
    return 0


def _features(args: argparse.Namespace) -> int:
    from rtml.online_store import features_get_command

    return features_get_command(
        args.featureset, args.entity_id, redis_url=StackSettings().redis_url, as_json=args.json
    )


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rtml.offline import KafkaRange
    from rtml.training.fraud import TrainOptions, train_fraud

    ranged = any(v is not None for v in (args.from_, args.to, args.offsets, args.group))
    if ranged and args.topic is None:
        raise ValueError("--from, --to, --offsets and --group need --topic")
    options = TrainOptions(
        out=Path(args.out), events=args.events, seed=args.seed, rate=args.rate,
        fraud_fraction=args.fraud_fraction, topic=args.topic,
        kafka_range=KafkaRange.from_options(args.from_, args.to, args.offsets, args.group)
        if args.topic else None,
        labels_topic=args.labels_topic, model_name=args.model_name, publish=not args.no_publish,
    )  # fmt: skip
    train_fraud(options)
    return 0


def _demo(args: argparse.Namespace) -> int:
    if args.which == "smoke":
        from rtml import demo

        return demo.run()
    from rtml import fraud_demo

    return fraud_demo.run(events=args.events, seed=args.seed, train_events=args.train_events)


def _models(args: argparse.Namespace) -> int:
    from rtml import v2client
    from rtml.scoring import model_versions
    from rtml.settings import ScoringJobSettings

    settings = ScoringJobSettings()
    version = args.version if args.action == "promote" else None
    # A version the server does not serve would send every request to the fallbacks.
    serving = version is None or args.no_check
    if not serving and not v2client.model_ready(settings.model_url, args.model, version):
        raise ValueError(
            f"{settings.model_url} does not serve model {args.model} version {version} "
            "(publish and load it first, or pass --no-check)"
        )
    spec = None
    if version is not None:
        from jobs.scoring import model_spec
        from rtml.settings import StackSettings

        repo = settings.scoring_model_repo or StackSettings().model_repo
        try:
            spec = model_spec(repo, args.model, version)
        except FileNotFoundError as missing:
            print(
                f"rtml: warning: {missing}: scoring jobs cannot check the version's features "
                "and keep deciding with their own threshold",
                file=sys.stderr,
            )
    model_versions.promote(
        settings.kafka_bootstrap, args.model, version, settings.scoring_models_topic,
        feature_names=spec.feature_names if spec else None,
        threshold=spec.threshold if spec else None,
    )  # fmt: skip
    shown = f"version {version}" if version else "its configured version"
    print(f"{args.model}: scoring jobs now use {shown} ({settings.scoring_models_topic})")
    if spec is not None:
        threshold = "theirs" if spec.threshold is None else f"{spec.threshold:g}"
        print(
            f"  {len(spec.feature_names)} features, threshold {threshold} (a job started with an "
            "explicit RTML_SCORING_THRESHOLD keeps its own); jobs that send other features "
            "refuse it and say so in their log and metric rtml_scoring.promotions_refused"
        )
    return 0


def _backtest(args: argparse.Namespace) -> int:
    from rtml.backtest import BacktestOptions, run_backtest
    from rtml.offline import KafkaRange, parse_time

    try:
        options = BacktestOptions(
            model=args.model, candidates=tuple(args.candidate),
            kafka_range=KafkaRange.from_options(args.from_, args.to, args.offsets, args.group),
            production=args.production, featureset=args.featureset,
            labels_topic=args.labels_topic,
            labels_until_ms=parse_time(args.labels_until) if args.labels_until else None,
            predictions_topic=args.predictions_topic, out=args.out, no_timeouts=args.no_timeouts,
            run_id=args.run_id, output_topic=args.output_topic, redis_prefix=args.redis_prefix,
            parity=not args.no_parity,
        )  # fmt: skip
        run_backtest(options, log=lambda line: print(line, flush=True))
    except (ValueError, FileNotFoundError) as error:
        # Bad input (range, model folders, isolation): one line, exit code 2, no traceback.
        print(f"rtml: error: {error}", file=sys.stderr)
        return 2
    return 0


def _shadow(args: argparse.Namespace) -> int:
    from rtml import shadow
    from rtml.settings import ScoringJobSettings

    def log(line: str) -> None:
        print(line, flush=True)

    try:
        if args.action == "start":
            shadow.start(
                args.model, args.version, cluster=args.cluster, detached=args.detached, log=log
            )
        elif args.action == "stop":
            shadow.stop(args.model, args.version, log=log)
        else:
            if args.window is not None and args.window < 1:
                raise shadow.ShadowRefused(f"--window must be at least 1, not {args.window}")
            settings = ScoringJobSettings()
            summaries = shadow.status_summaries(
                settings.kafka_bootstrap,
                shadow.production_predictions_topic(settings, args.model),
                shadow.plan(settings, args.model, args.version).predictions_topic,
                args.window,
            )
            try:
                for summary in summaries:
                    if args.json:
                        print(json.dumps(summary), flush=True)
                    else:
                        stamp = time.strftime("%H:%M:%S")
                        print(f"[{stamp}] {shadow.format_status(summary)}\n", flush=True)
                    if not args.follow:
                        break
                    time.sleep(args.every)
            except KeyboardInterrupt:
                pass
            finally:
                summaries.close()
    except shadow.ShadowRefused as error:
        print(f"rtml: error: {error}", file=sys.stderr)
        return 2
    return 0


HANDLERS = {
    "shadow": _shadow,
    "backtest": _backtest,
    "models": _models,
    "train": _train,
    "demo": _demo,
    "stack": _stack,
    "submit": _submit,
    "jobs": _jobs,
    "generate": _generate,
    "read": _read,
    "features": _features,
}


if __name__ == "__main__":
    sys.exit(main())
