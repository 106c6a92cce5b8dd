"""`rtml shadow`: a candidate model version scored live beside production, on the same features.

A shadow is a second run of the scoring job (`jobs/scoring.py`, unchanged) with settings that
make it harmless to production:

- its model version is pinned (`RTML_SCORING_MODEL_VERSION`) and it does not follow the models
  topic (`RTML_SCORING_FOLLOW_VERSIONS=false`), so a promotion never changes what it scores with;
- it writes its predictions to `rtml.shadow.<model>.v<version>` and its dead letters to
  `rtml.shadow.<model>.v<version>.dead-letter` only;
- its consumer group and transactional ids have a prefix of their own: sharing production's
  transactional ids would fence production's producers and abort their transactions.

`start` refuses (ShadowRefused) when a shadow output would be a production topic or the version
is not both published in the model repository and served by the model server. The job is named
`rtml-shadow-<model>-v<version>` (production's: `rtml-scoring-<model>`); its id is recorded under
the stack's runtime folder, so `stop` cancels exactly the job `start` submitted.

`status` reads production's predictions and the shadow's (read_committed), joins them by event
id and compares them: agreement of decisions, score differences, PSI of the shadow's scores
against production's (`rtml.backtest.metrics.psi`), each side's paths and fallback rate, and the
events only one side has scored so far. The join and the statistics are pure functions.

Promoting the candidate is `rtml models promote MODEL VERSION`: production switches at its next
batch, without a restart, and from then on scores what the shadow scores.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rtml.backtest import isolation
from rtml.backtest.metrics import agreement, fallback_rate, path_counts, psi

if TYPE_CHECKING:
    from rtml.settings import ScoringJobSettings

# Kafka topic names allow these; model and version become part of topic names and ids.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
LABELS_TOPIC = "rtml.fraud.labels"  # the generator's labels topic: production's, never written
_ENDED = {"CANCELED", "FAILED", "FINISHED"}


class ShadowRefused(ValueError):
    """A shadow cannot run (or be stopped) as asked; the message says why and what to do."""


# -- what a shadow is: names and settings (pure) --------------------------------------------------


def shadow_topic(model: str, version: str) -> str:
    """Where the shadow of `model` at `version` writes its predictions."""
    return f"rtml.shadow.{model}.v{version}"


def production_predictions_topic(settings: ScoringJobSettings, model: str) -> str:
    """Production's predictions topic, as jobs/scoring.py names it."""
    return settings.scoring_predictions_topic or f"rtml.predictions.{model}"


def production_dead_letter_topic(settings: ScoringJobSettings, model: str) -> str:
    return settings.scoring_dead_letter_topic or f"rtml.scoring.{model}.dead-letter"


@dataclass(frozen=True)
class ShadowPlan:
    """The shadow job of one model version: its outputs, its ids and the settings that give them."""

    model: str
    version: str
    predictions_topic: str
    dead_letter_topic: str
    id_prefix: str  # RTML_SCORING_ID_PREFIX; the job appends "-<model>"
    production_predictions_topic: str

    @property
    def consumer_group(self) -> str:
        return f"{self.id_prefix}-{self.model}"  # as jobs/scoring.py's params() makes it

    def environment(self) -> dict[str, str]:
        """The environment overrides that turn the scoring job into this shadow."""
        return {
            "RTML_SCORING_MODEL_VERSION": self.version,
            "RTML_SCORING_FOLLOW_VERSIONS": "false",
            "RTML_SCORING_PREDICTIONS_TOPIC": self.predictions_topic,
            "RTML_SCORING_DEAD_LETTER_TOPIC": self.dead_letter_topic,
            "RTML_SCORING_ID_PREFIX": self.id_prefix,
            "RTML_SCORING_JOB_NAME": shadow_job_name(self.model, self.version),
        }


def shadow_job_name(model: str, version: str) -> str:
    """The shadow's Flink job name: told apart from production's `rtml-scoring-<model>`."""
    return f"rtml-shadow-{model}-v{version}"


def plan(settings: ScoringJobSettings, model: str, version: str) -> ShadowPlan:
    """The shadow of `model` at `version`, next to the production job `settings` describe."""
    for kind, value in (("model", model), ("version", version)):
        if not _NAME.match(value):
            raise ShadowRefused(
                f"invalid {kind} {value!r}: use letters, digits, '.', '_', '-' (it names topics)"
            )
    topic = shadow_topic(model, version)
    return ShadowPlan(
        model=model,
        version=version,
        predictions_topic=topic,
        dead_letter_topic=f"{topic}.dead-letter",
        id_prefix=f"{settings.scoring_id_prefix}-shadow-v{version}",
        production_predictions_topic=production_predictions_topic(settings, model),
    )


def check_isolation(
    shadow: ShadowPlan, production: isolation.ProductionNames, production_id_prefix: str
) -> None:
    """ShadowRefused, naming the conflict, if the shadow would write where production does."""
    for what, topic in (
        ("predictions", shadow.predictions_topic),
        ("dead-letter", shadow.dead_letter_topic),
    ):
        if topic in production.topics:
            raise ShadowRefused(
                f"the shadow's {what} topic {topic} is {production.topics[topic]}: a shadow never "
                "writes production topics (check RTML_SCORING_PREDICTIONS_TOPIC / "
                "RTML_SCORING_DEAD_LETTER_TOPIC)"
            )
    if shadow.id_prefix == production_id_prefix:
        raise ShadowRefused(
            f"the shadow's id prefix {shadow.id_prefix} is production's: its transactions would "
            "fence production's"
        )


# -- predictions and the join (pure) ---------------------------------------------------------------


@dataclass(frozen=True)
class Scored:
    """One prediction record, the fields the comparison uses."""

    event_id: str
    event_ms: int
    score: float
    decision: bool
    path: str
    model_version: str


def event_ms(text: str) -> int:
    """Epoch ms of an ISO-8601 event time as the predictions sink writes it (`...Z`)."""
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def parse_prediction(value: bytes | None) -> Scored | None:
    """A prediction record's fields; None when the record is not a prediction (malformed)."""
    if not value:
        return None
    try:
        row = json.loads(value)
        return Scored(
            event_id=str(row["event_id"]),
            event_ms=event_ms(row["event_time"]),
            score=float(row["score"]),
            decision=bool(row["decision"]),
            path=str(row["path"]),
            model_version=str(row["model_version"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


@dataclass
class Side:
    """One topic's predictions so far: the latest per event id (a restarted shadow re-scores
    history; within a partition, and an event's entity keeps it on one, later is newer)."""

    by_event: dict[str, Scored] = field(default_factory=dict)
    records: int = 0
    rescored: int = 0  # records for an event id already seen
    malformed: int = 0

    def add(self, values: Iterable[bytes | None]) -> None:
        for value in values:
            self.records += 1
            scored = parse_prediction(value)
            if scored is None:
                self.malformed += 1
                continue
            if scored.event_id in self.by_event:
                self.rescored += 1
            self.by_event[scored.event_id] = scored


@dataclass(frozen=True)
class Joined:
    """Events both sides scored, oldest first (event time, then event id), and those only one
    side has scored so far."""

    pairs: list[tuple[Scored, Scored]]  # (production, shadow)
    only_production: int
    only_shadow: int


def join(production: Mapping[str, Scored], shadow: Mapping[str, Scored]) -> Joined:
    """Join the two sides by event id."""
    both = production.keys() & shadow.keys()
    pairs = sorted(
        ((production[e], shadow[e]) for e in both), key=lambda p: (p[0].event_ms, p[0].event_id)
    )
    return Joined(pairs, len(production) - len(both), len(shadow) - len(both))


def _side_summary(rows: Sequence[Scored]) -> dict[str, Any]:
    paths = path_counts(row.path for row in rows)
    return {
        "paths": paths,
        "fallback_rate": fallback_rate(paths),
        "model_versions": dict(sorted(Counter(row.model_version for row in rows).items())),
    }


def compare(joined: Joined, window: int | None = None) -> dict[str, Any]:
    """Agreement and score shift over the last `window` joined events (None: all), JSON-ready.

    - `agreement`: share of events whose decisions are equal (None without joined events);
    - `score_diff`: shadow minus production, mean, mean absolute and largest absolute;
    - `psi`: the shadow's scores against production's as the reference (metrics.psi);
    - per side: path counts, fallback rate, and which model versions answered.
    """
    if window is not None and window < 1:
        raise ValueError(f"window must be at least 1 event, not {window}")
    pairs = joined.pairs[-window:] if window is not None else joined.pairs
    production = [p for p, _ in pairs]
    shadow = [s for _, s in pairs]
    production_scores = np.array([row.score for row in production], dtype=float)
    shadow_scores = np.array([row.score for row in shadow], dtype=float)
    agreed = agreement(
        np.array([row.decision for row in shadow], dtype=bool),
        pd.Series([row.decision for row in production], dtype=object),
    )
    diff = shadow_scores - production_scores
    return {
        "window": window,
        "joined": len(pairs),
        "joined_total": len(joined.pairs),
        "agreement": agreed["share"],
        "agree": agreed["agree"],
        "score_diff": {
            "mean": float(diff.mean()) if len(diff) else None,
            "mean_abs": float(np.abs(diff).mean()) if len(diff) else None,
            "max_abs": float(np.abs(diff).max()) if len(diff) else None,
        },
        "psi": psi(shadow_scores, production_scores),
        "production": _side_summary(production),
        "shadow": _side_summary(shadow),
        "only_production": joined.only_production,
        "only_shadow": joined.only_shadow,
        "first_event_ms": production[0].event_ms if production else None,
        "last_event_ms": production[-1].event_ms if production else None,
    }


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def format_status(summary: Mapping[str, Any]) -> str:
    """The human-readable status block of `summary` (compare() plus topics and counts)."""
    window = summary["window"]
    scope = "all" if window is None else f"the last {summary['joined']} of"
    lines = [
        f"shadow {summary['shadow_topic']} vs production {summary['production_topic']}: "
        f"{scope} {summary['joined_total']} events scored by both",
        f"agreement       {_number(summary['agreement'], '.2%')}"
        f"  ({summary['agree']} of {summary['joined']} decisions equal)",
        f"score shift     mean {_number(summary['score_diff']['mean'], '+.4f')} (shadow - "
        f"production), mean |diff| {_number(summary['score_diff']['mean_abs'], '.4f')}, max "
        f"|diff| {_number(summary['score_diff']['max_abs'], '.4f')}",
        f"PSI             {_number(summary['psi'], '.4f')}  (shadow scores against production's;"
        " < 0.1 stable, > 0.25 a large shift)",
        f"{'':<16}{'production':<24}shadow",
    ]
    production, shadow = summary["production"], summary["shadow"]
    rows = [("fallback rate", _number(production["fallback_rate"], ".2%"),
             _number(shadow["fallback_rate"], ".2%"))]  # fmt: skip
    rows += [(path, str(production["paths"][path]), str(shadow["paths"][path]))
             for path in production["paths"]]  # fmt: skip
    rows.append((
        "versions",
        ", ".join(f"{v}: {n}" for v, n in production["model_versions"].items()) or "-",
        ", ".join(f"{v}: {n}" for v, n in shadow["model_versions"].items()) or "-",
    ))  # fmt: skip
    lines += [f"{name:<16}{left:<24}{right}" for name, left, right in rows]
    for side in ("production", "shadow"):
        if not summary[side].get("topic_exists", True):
            lines.append(f"note: {summary[f'{side}_topic']} does not exist (yet)")
    lines.append(
        f"one side only   {summary['only_production']} production, {summary['only_shadow']} "
        "shadow (not scored by the other yet: exactly-once predictions appear per checkpoint)"
    )
    return "\n".join(lines)


# -- reading the topics ----------------------------------------------------------------------------


class TopicTail:
    """Reads a topic read_committed from its beginning, each call up to its current end."""

    def __init__(self, bootstrap: str, topic: str, *, stall_timeout_s: float = 60.0) -> None:
        from kafka import KafkaConsumer

        self.topic = topic
        self.stall_timeout_s = stall_timeout_s
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
            isolation_level="read_committed", auto_offset_reset="earliest",
            client_id="rtml-shadow-status",
        )  # fmt: skip
        self._assigned: list[Any] = []

    @property
    def exists(self) -> bool:
        return bool(self._assigned)

    def read_new(self) -> list[bytes | None]:
        """The values committed since the last call (all of them the first time); [] while the
        topic does not exist. TimeoutError if reading makes no progress for stall_timeout_s."""
        from kafka import TopicPartition

        if not self._assigned:
            partitions = self._consumer.partitions_for_topic(self.topic)
            if not partitions:
                return []
            self._assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            self._consumer.assign(self._assigned)
            self._consumer.seek_to_beginning(*self._assigned)
        end = self._consumer.end_offsets(self._assigned)  # read_committed: the last stable offset
        values: list[bytes | None] = []
        progress_at = time.monotonic()
        while any(self._consumer.position(tp) < end[tp] for tp in self._assigned):
            batches = self._consumer.poll(timeout_ms=500)
            if batches:
                progress_at = time.monotonic()
            elif time.monotonic() - progress_at > self.stall_timeout_s:
                raise TimeoutError(
                    f"{self.topic}: nothing read for {self.stall_timeout_s:.0f} s before its end"
                )
            for tp, batch in batches.items():
                values.extend(r.value for r in batch if r.offset < end[tp])
        return values

    def close(self) -> None:
        self._consumer.close()


def status_summaries(
    bootstrap: str, production_topic: str, shadow_topic_name: str, window: int | None
) -> Iterator[dict[str, Any]]:
    """A summary per call of next(): both topics read up to their ends at that moment."""
    tails = TopicTail(bootstrap, production_topic), TopicTail(bootstrap, shadow_topic_name)
    sides = Side(), Side()
    try:
        while True:
            for tail, side in zip(tails, sides, strict=True):
                side.add(tail.read_new())
            summary = compare(join(sides[0].by_event, sides[1].by_event), window)
            for name, tail, side in zip(("production", "shadow"), tails, sides, strict=True):
                summary[name].update(
                    predictions=len(side.by_event), rescored=side.rescored,
                    malformed=side.malformed, topic_exists=tail.exists,
                )  # fmt: skip
            yield {"production_topic": production_topic, "shadow_topic": shadow_topic_name,
                   **summary}  # fmt: skip
    finally:
        for tail in tails:
            tail.close()


# -- running and stopping the shadow job ----------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """What `start` remembers of a shadow job, so that `stop` finds it."""

    model: str
    version: str
    job_id: str
    cluster: str
    consumer_group: str
    predictions_topic: str
    started_ms: int


def record_path(runtime: Path, model: str, version: str) -> Path:
    return runtime / "shadows" / f"{model}.v{version}.json"


def read_record(path: Path) -> Record | None:
    try:
        return Record(**json.loads(path.read_text("utf-8")))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as error:
        raise ShadowRefused(f"{path}: not a shadow record ({error}); delete it") from None


def write_record(path: Path, record: Record) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(record), indent=2) + "\n", "utf-8")


@contextlib.contextmanager
def _environment(overrides: Mapping[str, str]) -> Iterator[None]:
    """`os.environ` with `overrides` for the duration (Stack.submit hands os.environ to the job)."""
    saved = {name: os.environ.get(name) for name in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _production_names(settings: ScoringJobSettings, model: str) -> isolation.ProductionNames:
    from rtml import featuresets
    from rtml.settings import FeatureJobSettings

    features_dir = FeatureJobSettings().features_dir
    definitions = [
        featuresets.load(path.stem, features_dir) for path in sorted(features_dir.glob("*.yaml"))
    ]
    return isolation.production_names(
        definitions,
        predictions_topics={
            production_predictions_topic(settings, model),
            f"rtml.predictions.{model}",
        },
        scoring_dead_letter_topics={
            production_dead_letter_topic(settings, model),
            f"rtml.scoring.{model}.dead-letter",
        },
        models_topic=settings.scoring_models_topic,
        labels_topic=LABELS_TOPIC,
    )


def check_version(settings: ScoringJobSettings, repo: Path, model: str, version: str) -> None:
    """ShadowRefused unless `version` is published in `repo` and served by the model server."""
    from rtml import model_repo, v2client

    metadata = repo / model / version / model_repo.METADATA_FILENAME
    if not metadata.is_file():
        raise ShadowRefused(
            f"model {model} version {version} is not published: {metadata} not found "
            "(publish it, e.g. rtml train fraud, or rtml.model_repo.publish_sklearn_model)"
        )
    if not v2client.model_ready(settings.model_url, model, version):
        raise ShadowRefused(
            f"{settings.model_url} does not serve model {model} version {version} (load it on "
            "the model server first)"
        )


def _job_state(rest: Any, job_id: str) -> str | None:
    from rtml.flinkrest import FlinkError

    try:
        return str(rest.job(job_id)["state"])
    except FlinkError:
        return None  # unknown to the cluster (e.g. a restarted JobManager)


def start(
    model: str, version: str, *, cluster: str | None, detached: bool, log: Callable[[str], None]
) -> str:
    """Submit the shadow job of `model` at `version`; returns its job id. Attached, wait for the
    job to end (Ctrl-C cancels it)."""
    from rtml.flinkrest import FlinkRest
    from rtml.settings import LOOPBACK, ScoringJobSettings, StackSettings
    from rtml.stack import Stack

    settings = ScoringJobSettings()
    stack_settings = StackSettings()
    shadow = plan(settings, model, version)
    check_isolation(shadow, _production_names(settings, model), settings.scoring_id_prefix)
    check_version(
        settings, settings.scoring_model_repo or stack_settings.model_repo, model, version
    )
    cluster = cluster or f"{LOOPBACK}:{stack_settings.flink_rest_port}"
    rest = FlinkRest(f"http://{cluster}")
    path = record_path(stack_settings.runtime, model, version)
    previous = read_record(path)
    if previous is not None:
        state = _job_state(FlinkRest(f"http://{previous.cluster}"), previous.job_id)
        if state is not None and state not in _ENDED:
            raise ShadowRefused(
                f"a shadow of {model} version {version} is already {state} as job "
                f"{previous.job_id}: `rtml shadow stop {model} {version}` first"
            )
    with _environment(shadow.environment()):
        job_id = Stack(stack_settings).submit(
            "scoring", cluster=cluster, detached=True, job_args=[model]
        )
    assert job_id is not None  # detached submission returns the id or raises
    write_record(path, Record(
        model=model, version=version, job_id=job_id, cluster=cluster,
        consumer_group=shadow.consumer_group, predictions_topic=shadow.predictions_topic,
        started_ms=int(time.time() * 1000),
    ))  # fmt: skip
    log(job_id)
    log(
        f"shadow of {model} version {version}: predictions to {shadow.predictions_topic} "
        f"(production: {shadow.production_predictions_topic}); "
        f"`rtml shadow status {model} {version}` compares them"
    )
    if detached:
        return job_id
    try:
        rest.wait_for_state(job_id, _ENDED, timeout_s=float("inf"))
    except KeyboardInterrupt:
        log(f"cancelling the shadow job {job_id}")
        stop(model, version, log=log)
    return job_id


def stop(model: str, version: str, *, log: Callable[[str], None]) -> str:
    """Cancel the shadow job of `model` at `version`; returns its job id.

    Its consumer group is deleted too: a later shadow of the same version then reads the source
    topic from the beginning and builds its windows as production did, instead of resuming at
    the old offsets with empty windows (wrong windowed features for a window's length).
    """
    from rtml.flinkrest import FlinkRest
    from rtml.settings import ScoringJobSettings, StackSettings

    plan(ScoringJobSettings(), model, version)  # validates the names
    path = record_path(StackSettings().runtime, model, version)
    record = read_record(path)
    if record is None:
        raise ShadowRefused(
            f"no shadow of {model} version {version} was started here ({path} not found); look "
            f"for job {shadow_job_name(model, version)} in `rtml jobs list` and "
            "`rtml jobs cancel JOB_ID`"
        )
    rest = FlinkRest(f"http://{record.cluster}")
    state = _job_state(rest, record.job_id)
    if state is not None and state not in _ENDED:
        rest.cancel(record.job_id)
        state = rest.wait_for_state(record.job_id, _ENDED, timeout_s=120)
    log(f"shadow job {record.job_id} of {model} version {version}: {state or 'gone'}")
    problem = _delete_group(ScoringJobSettings().kafka_bootstrap, record.consumer_group)
    if problem:
        log(f"note: consumer group {record.consumer_group} not deleted: {problem}")
    path.unlink()
    return record.job_id


def _delete_group(bootstrap: str, group: str) -> str | None:
    """Delete the consumer group; returns why not, None when deleted (or it never existed)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="rtml-shadow")
    try:
        # kafka-python 3 answers {group: "OK" or the error's class name} (its docstring says a
        # list of pairs; dict() takes both)
        result = dict(admin.delete_groups([group])).get(group, "OK")
        if result not in ("OK", "GroupIdNotFoundError"):
            return str(result)
    except Exception as error:  # noqa: BLE001 - the job is cancelled; the group is a detail
        return repr(error)
    finally:
        admin.close()
    return None
