"""A backtest never writes where production reads: the check of its configured outputs (pure).

A backtest reads production topics and writes its results under `--out`. It may also write its
candidates' predictions to a Kafka topic (`--output-topic`) and its recomputed features to Redis
(`--redis-prefix`); both must then be *run-scoped*: named with the run id, and not a production
topic or key prefix. `check_outputs` runs before anything is read, so a misconfigured backtest
fails at once, with the conflict named, and has touched nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from rtml.featuresets import FeatureSetDefinition

# The online store's namespace: every key under it belongs to a feature set (rtml.online_store).
ONLINE_STORE_PREFIX = "rtml:fs:"
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class IsolationError(ValueError):
    """A backtest output points at production state (or is not named by the run)."""


@dataclass(frozen=True)
class ProductionNames:
    """What production owns: topic names (with what each is) and Redis key prefixes."""

    topics: dict[str, str]  # topic -> what it is, for messages
    key_prefixes: dict[str, str]  # key prefix -> what it is


def production_names(
    definitions: Iterable[FeatureSetDefinition],
    *,
    predictions_topics: Iterable[str] = (),
    scoring_dead_letter_topics: Iterable[str] = (),
    models_topic: str,
    labels_topic: str,
) -> ProductionNames:
    """The topics and key prefixes of every feature set (sql/features/*.yaml), of scoring jobs,
    the models topic and the labels topic."""
    topics: dict[str, str] = {}
    prefixes: dict[str, str] = {ONLINE_STORE_PREFIX: "the online store's namespace"}
    for definition in definitions:
        about = f"feature set {definition.name}"
        topics.setdefault(definition.source.topic, f"the source topic of {about}")
        topics.setdefault(definition.features_topic, f"the features topic of {about}")
        topics.setdefault(definition.source.dead_letter_topic, f"the dead-letter topic of {about}")
        prefixes[f"{ONLINE_STORE_PREFIX}{definition.name}:"] = f"the Redis keys of {about}"
    for topic in predictions_topics:
        topics.setdefault(topic, "a production predictions topic")
    for topic in scoring_dead_letter_topics:
        topics.setdefault(topic, "a scoring job's dead-letter topic")
    topics.setdefault(models_topic, "the topic naming each model's production version")
    topics.setdefault(labels_topic, "the labels topic")
    return ProductionNames(topics, prefixes)


def check_run_id(run_id: str) -> str:
    """`run_id` if it can name topics, keys and folders, else IsolationError."""
    if not RUN_ID.match(run_id):
        raise IsolationError(
            f"run id {run_id!r}: use 1-64 letters, digits, '.', '_' or '-' (not first: '.', "
            "'_', '-'); it names the backtest's topics, keys and folder"
        )
    return run_id


def check_outputs(
    run_id: str,
    production: ProductionNames,
    *,
    output_topic: str | None = None,
    redis_prefix: str | None = None,
) -> None:
    """Raise IsolationError, naming the conflict, unless every configured output is run-scoped.

    An output topic must not be a production topic and must contain the run id. A Redis prefix
    must contain the run id and must not equal or overlap a production key prefix: overlapping
    either way (one a prefix of the other) means the backtest's keys and production's can be the
    same keys, or a clean-up by prefix would delete production's.
    """
    check_run_id(run_id)
    if output_topic is not None:
        topic = output_topic.strip()
        if not topic:
            raise IsolationError("--output-topic is empty")
        if topic in production.topics:
            raise IsolationError(
                f"--output-topic {topic} is {production.topics[topic]}: a backtest never writes "
                f"to production topics; use a topic of its own, e.g. "
                f"rtml.backtest.{run_id}.predictions"
            )
        if run_id not in topic:
            raise IsolationError(
                f"--output-topic {topic} does not contain the run id {run_id}: backtest topics "
                f"are run-scoped, e.g. rtml.backtest.{run_id}.predictions"
            )
    if redis_prefix is not None:
        if not redis_prefix:
            raise IsolationError("--redis-prefix is empty")
        # The most specific first: a feature set's keys say more than the whole namespace.
        for prefix, about in sorted(production.key_prefixes.items(), key=lambda p: -len(p[0])):
            if redis_prefix.startswith(prefix) or prefix.startswith(redis_prefix):
                relation = "equals" if prefix == redis_prefix else "overlaps"
                raise IsolationError(
                    f"--redis-prefix {redis_prefix!r} {relation} {prefix!r}, {about}: a backtest "
                    f"never writes production keys; use e.g. 'rtml:backtest:{run_id}:'"
                )
        if run_id not in redis_prefix:
            raise IsolationError(
                f"--redis-prefix {redis_prefix!r} does not contain the run id {run_id}: backtest "
                f"keys are run-scoped, e.g. 'rtml:backtest:{run_id}:'"
            )
