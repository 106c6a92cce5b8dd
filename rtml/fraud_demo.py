"""`rtml demo`: the whole fraud pipeline on the local stack, end to end, then what it produced.

1. models: trains the primary and fallback fraud models (`rtml train fraud`) unless the model
   repository already serves the model and the demo's fallback model exists;
2. jobs: submits the fraud_card feature job (Redis + features topic) and the fraud scoring job
   (predictions topic, exactly-once) unless they are running;
3. events: generates labelled transactions with injected attacks (card testing, account takeover,
   amount spikes), their event times ending now;
4. waits for every transaction's prediction (read_committed), then prints the flagged ones with
   their features and scores, how well the flags match the injected attacks, the share of
   predictions that came from a fallback, and the commands to look around.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rtml import featuresets, flinkrest, generate, kafka_admin
from rtml.generators import GENERATORS, as_records
from rtml.kafka_io import end_offsets, last_event_ms, read_since
from rtml.online_store import feature_key
from rtml.settings import FeatureJobSettings, ScoringJobSettings, StackSettings
from rtml.stack import Stack
from rtml.training.fraud import DEFAULT_RATE as TRAINING_RATE
from rtml.training.fraud import generated_records

DEMO_EVENTS = 5000
SHOWN_FEATURES = (
    "tx_count_1m", "merchants_5m", "amount_vs_avg_24h", "countries_24h",
    "country_new_24h", "device_new_24h",
)  # fmt: skip


@dataclass(frozen=True)
class DemoSummary:
    """What the predictions of one demo run say (pure: see `summarize`)."""

    events: int
    predicted: int
    duplicates: int
    flagged: int
    fraud: int
    flagged_fraud: int
    paths: dict[str, int]

    @property
    def fallback_rate(self) -> float:
        return 1 - self.paths.get("primary", 0) / self.predicted if self.predicted else 0.0

    @property
    def precision(self) -> float | None:
        return self.flagged_fraud / self.flagged if self.flagged else None

    @property
    def recall(self) -> float | None:
        return self.flagged_fraud / self.fraud if self.fraud else None


def summarize(
    events: Sequence[Mapping[str, object]], predictions: Iterable[Mapping[str, object]]
) -> DemoSummary:
    """This run's predictions (others ignored) against the generator's own truth (`is_fraud`)."""
    truth = {str(e["event_id"]): bool(e["is_fraud"]) for e in events}
    seen: Counter[str] = Counter()
    paths: Counter[str] = Counter()
    flagged = flagged_fraud = 0
    for prediction in predictions:
        event_id = str(prediction["event_id"])
        if event_id not in truth:
            continue
        seen[event_id] += 1
        if seen[event_id] > 1:
            continue
        paths[str(prediction["path"])] += 1
        if prediction["decision"]:
            flagged += 1
            flagged_fraud += truth[event_id]
    return DemoSummary(
        events=len(truth), predicted=len(seen), duplicates=sum(seen.values()) - len(seen),
        flagged=flagged, fraud=sum(truth.values()), flagged_fraud=flagged_fraud,
        paths=dict(paths),
    )  # fmt: skip


def fallback_reasons(
    events: Sequence[Mapping[str, object]], predictions: Iterable[Mapping[str, object]]
) -> Counter[str]:
    """Why this run's predictions did not come from the primary model, counted by reason
    (the `error` of each, numbers left out so that "timeout after 36 ms" and "... 41 ms" add up)."""
    ids = {str(e["event_id"]) for e in events}
    reasons: Counter[str] = Counter()
    for prediction in predictions:
        if str(prediction["event_id"]) in ids and prediction["path"] != "primary":
            reasons[re.sub(r"\d+(\.\d+)?", "N", str(prediction.get("error") or "unknown"))] += 1
    return reasons


def flagged_table(
    events: Sequence[Mapping[str, object]],
    predictions: Iterable[Mapping[str, object]],
    features: Mapping[str, Mapping[str, object]],
    *,
    limit: int = 8,
    per_card_limit: int = 2,
    columns: Sequence[str] = SHOWN_FEATURES,
) -> list[str]:
    """Lines of a table of the highest-scored flagged transactions: truth, score, features."""
    by_id = {str(e["event_id"]): e for e in events}
    flagged = {
        str(p["event_id"]): p for p in predictions if p["decision"] and str(p["event_id"]) in by_id
    }
    ranked = sorted(flagged.values(), key=lambda p: (-float(p["score"]), str(p["event_id"])))
    per_card: Counter[str] = Counter()
    top = []  # at most `per_card_limit` rows per card: one attack's burst does not fill the table
    for prediction in ranked:
        card = str(by_id[str(prediction["event_id"])]["card_id"])
        per_card[card] += 1
        if per_card[card] <= per_card_limit and len(top) < limit:
            top.append(prediction)
    header = ["EVENT", "CARD", "AMOUNT", "SCORE", "PATH", "INJECTED", *columns]
    rows = [header]
    for prediction in top:
        event = by_id[str(prediction["event_id"])]
        row = features.get(str(prediction["event_id"]), {})
        rows.append([
            str(event["event_id"]), str(event["card_id"]), f"{float(event['amount']):.2f}",
            f"{float(prediction['score']):.3f}", str(prediction["path"]),
            str(event.get("fraud_type") or "-"), *(_cell(row.get(name)) for name in columns),
        ])  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def ensure_models(
    stack: Stack, scoring: ScoringJobSettings, out: Path, *, train_events: int, log=print
) -> Path:
    """The fallback model's folder, training (and publishing) both models first if absent."""
    from rtml.training.fraud import TrainOptions, train_fraud

    repo = scoring.scoring_model_repo or stack.settings.model_repo
    published = sorted((repo / scoring.scoring_model).glob("*/metadata.json"))
    fallback = out / "fallback"
    if published and (fallback / "metadata.json").exists():
        log(f"models: using {scoring.scoring_model} from {repo} and the fallback in {fallback}")
        return fallback
    log(f"models: none yet, training them ({train_events} generated transactions) ...")
    train_fraud(
        TrainOptions(out=out, events=train_events, model_name=scoring.scoring_model),
        stack=stack.settings, log=lambda line: log(f"  {line}"),
    )  # fmt: skip
    return fallback


def events_that_fit(wanted: int, now_ms: int, previous_ms: int | None) -> int:
    """How many of `wanted` transactions, at the training rate and ending now, are all dated
    after an earlier run's newest event (`previous_ms`): the feature job would dead-letter older
    ones as late."""
    if previous_ms is None:
        return wanted
    room_ms = now_ms - previous_ms - 1000  # the first new event at least 1 s after the last old
    return max(0, min(wanted, int(room_ms / 1000 * TRAINING_RATE)))


def offset_ranges(before: Mapping[int, int], after: Mapping[int, int]) -> str:
    """`PARTITION:START-END,...` (END exclusive) of what was written in between, as
    `rtml backtest --offsets` takes it; partitions that got nothing are left out."""
    return ",".join(
        f"{p}:{before.get(p, 0)}-{end}"
        for p, end in sorted(after.items())
        if end > before.get(p, 0)
    )


def ensure_job(stack: Stack, rest: flinkrest.FlinkRest, job: str, name: str, arg: str, log) -> str:
    """The job named `name` (running, or submitted now) and RUNNING."""
    job_id = rest.alive_job(name)
    if job_id is None:
        log(f"jobs: submitting {job} {arg} ...")
        job_id = stack.submit(job, detached=True, job_args=[arg])
        assert job_id is not None
    rest.wait_for_state(job_id, {"RUNNING"}, timeout_s=180)
    log(f"jobs: {name} is running ({job_id})")
    return job_id


def run(
    *, events: int = DEMO_EVENTS, seed: int | None = None, train_events: int = 5000,
    timeout_s: float = 300, log=print,
) -> int:  # fmt: skip
    """The whole demo; 0 when every transaction got exactly one prediction."""
    stack = Stack(StackSettings())
    scoring = ScoringJobSettings()
    features_settings = FeatureJobSettings()
    definition = featuresets.load(scoring.scoring_featureset, features_settings.features_dir)
    bootstrap = stack.settings.kafka_bootstrap
    rest = flinkrest.FlinkRest(stack.settings.flink_rest_url)
    predictions_topic = (
        scoring.scoring_predictions_topic or f"rtml.predictions.{scoring.scoring_model}"
    )

    out = stack.settings.home / "demo" / "models" / scoring.scoring_model
    fallback = scoring.scoring_fallback_model or ensure_models(
        stack, scoring, out, train_events=train_events, log=log
    )
    # The scoring job reads its settings from the environment when it is submitted.
    os.environ["RTML_SCORING_FALLBACK_MODEL"] = str(fallback)
    kafka_admin.ensure_topics(
        bootstrap,
        {definition.source.topic: definition.source.partitions,
         definition.features_topic: definition.source.partitions,
         definition.source.dead_letter_topic: 1, predictions_topic: definition.source.partitions,
         GENERATORS["fraud"].labels_topic_default: definition.source.partitions},
    )  # fmt: skip
    ensure_job(stack, rest, "features", f"rtml-features-{definition.name}", definition.name, log)
    ensure_job(
        stack, rest, "scoring", f"rtml-scoring-{scoring.scoring_model}", scoring.scoring_model, log
    )

    since_transactions = end_offsets(bootstrap, definition.source.topic)
    since_predictions = end_offsets(bootstrap, predictions_topic)
    since_features = end_offsets(bootstrap, definition.features_topic)
    seed = int(time.time()) if seed is None else seed
    now_ms = int(time.time() * 1000)
    previous_ms = last_event_ms(bootstrap, definition.source.topic)
    fitting = events_that_fit(events, now_ms, previous_ms)
    if fitting < 1:
        log(
            f"rtml demo: {definition.source.topic} already holds events dated up to now or later; "
            "wait a minute and run again, or start over: rtml stack down && make clean"
        )
        return 1
    if fitting < events:
        assert previous_ms is not None
        log(
            f"events: an earlier run's transactions end {(now_ms - previous_ms) / 1000:.0f} s "
            f"ago; sending {fitting} (that span at {TRAINING_RATE:g} per second), not {events}, "
            "so that none is late"
        )
        events = fitting
    # The training data's rate (and, with as many events, cards): the model sees what it learned.
    # The history ends now and the Kafka timestamps are the event times, so time ranges
    # (`rtml backtest --from/--to`) find exactly these transactions.
    start_ms = now_ms - int(events / TRAINING_RATE * 1000)
    fraud = GENERATORS["fraud"]
    transactions = fraud.generate(events, seed=seed, start_ms=start_ms, rate=TRAINING_RATE)
    generate.produce(bootstrap, definition.source.topic, generated_records(transactions))
    # Their chargebacks and confirmations, as `rtml generate fraud` sends them: the demo's history
    # can then be backtested (`rtml backtest`) like production's.
    labels = fraud.labels(transactions, seed=seed)
    generate.produce(bootstrap, fraud.labels_topic_default, as_records(labels, fraud.key_of))
    # This run's records, for `rtml backtest --offsets`.
    written = offset_ranges(since_transactions, end_offsets(bootstrap, definition.source.topic))
    kinds = Counter(str(e["fraud_type"]) for e in transactions if e["is_fraud"])
    log(
        f"events: sent {events} transactions (seed {seed}) to {definition.source.topic} and "
        f"{len(labels)} labels to {fraud.labels_topic_default}; "
        f"injected attacks: {dict(kinds) or 'none'}"
    )

    wanted = {str(e["event_id"]) for e in transactions}
    log("waiting for every prediction (committed at each checkpoint, every 5 s) ...")
    waiting_since = time.monotonic()
    predictions = read_since(
        bootstrap, predictions_topic, since_predictions,
        until=lambda records: {r["event_id"] for r in records} >= wanted, timeout_s=timeout_s,
    )  # fmt: skip
    flagged_ids = {str(p["event_id"]) for p in predictions if p["decision"]} & wanted
    feature_rows = read_since(
        bootstrap, definition.features_topic, since_features,
        until=lambda records: {r["event_id"] for r in records} >= flagged_ids, timeout_s=60,
    )  # fmt: skip
    features = {str(r["event_id"]): r for r in feature_rows}
    summary = summarize(transactions, predictions)

    log(f"... {time.monotonic() - waiting_since:.0f} s after the last transaction was sent\n")
    log(f"predictions: {summary.predicted} of {summary.events} transactions, "
        f"{summary.duplicates} duplicates (read_committed from {predictions_topic})")  # fmt: skip
    log(f"flagged: {summary.flagged}; of the {summary.fraud} injected fraudulent transactions "
        f"{summary.flagged_fraud} were flagged (precision {_ratio(summary.precision)}, "
        f"recall {_ratio(summary.recall)})")  # fmt: skip
    paths = ", ".join(f"{path} {n}" for path, n in sorted(summary.paths.items()))
    log(f"paths: {paths or 'none'}; fallback rate {summary.fallback_rate:.1%}")
    for reason, count in fallback_reasons(transactions, predictions).most_common(3):
        log(f"  {count} fell back because {reason}")
    log("\nflagged transactions, highest scores first (INJECTED: the generator's attack label):")
    for line in flagged_table(transactions, predictions, features):
        log(f"  {line}")

    card = _example_card(transactions, predictions)
    log(
        "\nlook around:\n"
        f"  online features      rtml features get {definition.name} {card}\n"
        f"  the same, raw        redis-cli -p {stack.settings.redis_port} "
        f"HGETALL '{feature_key(definition.name, card)}'\n"
        f"  predictions          rtml read {predictions_topic}\n"
        f"  features topic       rtml read {definition.features_topic}\n"
        f"  dead letters         rtml read {definition.source.dead_letter_topic}\n"
        f"  jobs and metrics     rtml jobs list  |  Flink web UI {stack.settings.flink_rest_url}\n"
        f"  switch model version rtml models promote {scoring.scoring_model} VERSION\n"
        f"  backtest this run    rtml backtest {scoring.scoring_model} --candidate DIR "
        f"--offsets {written} --no-timeouts\n"
        "  stack                rtml stack status  |  rtml stack down"
    )
    if summary.predicted != summary.events or summary.duplicates:
        log("rtml demo: predictions are missing or duplicated (see above)")
        return 1
    return 0


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _example_card(
    events: Sequence[Mapping[str, object]], predictions: Iterable[Mapping[str, object]]
) -> str:
    """The card of the highest-scored prediction of this run (the first card if none)."""
    cards = {str(e["event_id"]): str(e["card_id"]) for e in events}
    ours = [p for p in predictions if str(p["event_id"]) in cards]
    if not ours:
        return str(events[0]["card_id"]) if events else "CARD"
    return cards[str(max(ours, key=lambda p: float(p["score"]))["event_id"])]
