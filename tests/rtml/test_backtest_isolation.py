"""The backtest's output check: run-scoped names only, never a production topic or key prefix."""

from __future__ import annotations

import pytest

from rtml import featuresets
from rtml.backtest.isolation import (
    IsolationError,
    check_outputs,
    check_run_id,
    production_names,
)
from rtml.featuresets import FEATURES_DIR

RUN = "bt42"


@pytest.fixture(scope="module")
def production() -> object:
    definitions = [
        featuresets.load(p.stem, FEATURES_DIR) for p in sorted(FEATURES_DIR.glob("*.yaml"))
    ]
    return production_names(
        definitions,
        predictions_topics=["rtml.predictions.fraud"],
        scoring_dead_letter_topics=["rtml.scoring.fraud.dead-letter"],
        models_topic="rtml.models.current",
        labels_topic="rtml.fraud.labels",
    )


@pytest.mark.parametrize(
    ("topic", "what"),
    [
        ("rtml.fraud.transactions", "source topic of feature set fraud_card"),
        ("rtml.features.fraud_card", "features topic of feature set fraud_card"),
        ("rtml.fraud.dead-letter", "dead-letter topic of feature set fraud_card"),
        ("rtml.features.clickstream_user", "features topic of feature set clickstream_user"),
        ("rtml.predictions.fraud", "production predictions topic"),
        ("rtml.scoring.fraud.dead-letter", "scoring job's dead-letter topic"),
        ("rtml.models.current", "production version"),
        ("rtml.fraud.labels", "labels topic"),
    ],
)
def test_a_production_topic_is_refused_and_named(production: object, topic: str, what: str) -> None:
    with pytest.raises(IsolationError, match=f"--output-topic {topic} is .*{what}"):
        check_outputs(RUN, production, output_topic=topic)  # type: ignore[arg-type]


def test_a_production_topic_is_refused_even_when_it_contains_the_run_id(production: object) -> None:
    with pytest.raises(IsolationError, match="is a production predictions topic"):
        check_outputs("fraud", production, output_topic="rtml.predictions.fraud")  # type: ignore[arg-type]


def test_an_output_topic_must_contain_the_run_id(production: object) -> None:
    with pytest.raises(IsolationError, match="does not contain the run id bt42"):
        check_outputs(RUN, production, output_topic="rtml.backtest.predictions")  # type: ignore[arg-type]
    check_outputs(RUN, production, output_topic=f"rtml.backtest.{RUN}.predictions")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        (
            "rtml:fs:fraud_card:",
            "equals 'rtml:fs:fraud_card:', the Redis keys of feature set fraud_card",
        ),
        ("rtml:fs:fraud_card:bt42:", "overlaps 'rtml:fs:fraud_card:'"),
        ("rtml:fs:fraud", "overlaps 'rtml:fs:"),  # a prefix of production's keys
        ("rtml:", "overlaps 'rtml:fs:"),  # a prefix of every production key
        ("", "--redis-prefix is empty"),
        ("rtml:fs:bt42:", "overlaps 'rtml:fs:', the online store's namespace"),
        ("rtml:backtest:", "does not contain the run id bt42"),
    ],
)
def test_a_production_key_prefix_is_refused(production: object, prefix: str, message: str) -> None:
    with pytest.raises(IsolationError, match=message.replace("(", r"\(")):
        check_outputs(RUN, production, redis_prefix=prefix)  # type: ignore[arg-type]


def test_run_scoped_outputs_pass(production: object) -> None:
    check_outputs(
        RUN,
        production,
        output_topic=f"rtml.backtest.{RUN}.predictions",  # type: ignore[arg-type]
        redis_prefix=f"rtml:backtest:{RUN}:",
    )
    check_outputs(RUN, production)  # type: ignore[arg-type]  # no outputs: nothing to check


@pytest.mark.parametrize("run_id", ["", "-x", "a b", "a:b", "x" * 65, "a/b"])
def test_a_run_id_that_cannot_name_topics_is_refused(run_id: str) -> None:
    with pytest.raises(IsolationError, match="run id"):
        check_run_id(run_id)
