"""jobs.scoring wiring that needs no services: the model's metadata, topics, placeholders, and
the job planned by Flink (offline: nothing connects to Kafka or the model server)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from jobs.scoring import ModelSpec, build, model_spec, params, scorer_udf, topics
from rtml import featuresets, flinkjob, sqlfiles
from rtml.settings import AT_LEAST_ONCE_LINGER_MS, EXACTLY_ONCE_LINGER_MS, ScoringJobSettings
from rtml.sqlfiles import SQL_DIR

PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
SPEC = ModelSpec(
    "fraud", "3", ("amount", "tx_count_1m", "amount_sum_5m", "merchants_5m", "ip_new_24h"), 0.3
)


def _publish(repo: Path, model: str, version: str, metadata: object) -> None:
    folder = repo / model / version
    folder.mkdir(parents=True)
    text = metadata if isinstance(metadata, str) else json.dumps(metadata)
    (folder / "metadata.json").write_text(text)


def test_model_spec_reads_the_newest_version_by_number(tmp_path: Path) -> None:
    for version in ("2", "10", "9"):
        _publish(tmp_path, "fraud", version, {"feature_names": [f"f{version}"]})
    (tmp_path / "fraud" / ".11.tmp-x").mkdir()  # half-published: no metadata yet
    spec = model_spec(tmp_path, "fraud")
    assert spec == ModelSpec("fraud", "10", ("f10",), None)
    assert model_spec(tmp_path, "fraud", "2").feature_names == ("f2",)


def test_model_spec_takes_the_threshold_of_the_metadata(tmp_path: Path) -> None:
    _publish(tmp_path, "fraud", "1", {"feature_names": ["a", "b"], "threshold": 0.27})
    assert model_spec(tmp_path, "fraud").threshold == 0.27


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"feature_names": []}, "feature_names must be"),
        ({"features": ["a"]}, "feature_names must be"),
        ("{broken", "not JSON"),
    ],
)
def test_model_spec_names_the_file_that_is_wrong(
    tmp_path: Path, metadata: object, message: str
) -> None:
    _publish(tmp_path, "fraud", "1", metadata)
    with pytest.raises(ValueError, match=message) as error:
        model_spec(tmp_path, "fraud")
    assert str(tmp_path / "fraud" / "1" / "metadata.json") in str(error.value)


def test_model_spec_without_a_published_version_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no version of model 'fraud'"):
        model_spec(tmp_path, "fraud")
    _publish(tmp_path, "fraud", "1", {"feature_names": ["a"]})
    with pytest.raises(FileNotFoundError, match="version '7'"):
        model_spec(tmp_path, "fraud", "7")


def test_topics_ids_and_snapshot_prefix() -> None:
    definition = featuresets.load("fraud_card")
    settings = ScoringJobSettings(kafka_bootstrap="broker:9092", scoring_id_prefix="team-a")
    assert topics(definition, settings, "fraud") == {
        "rtml.fraud.transactions": 2,
        "rtml.scoring.fraud.dead-letter": 1,
        "rtml.predictions.fraud": 2,
    }
    values = params(definition, settings, "fraud")
    assert values["group_id"] == values["transactional_id_prefix"] == "team-a-fraud"
    assert values["bootstrap"] == "broker:9092"
    assert values["snapshot_prefix"] == f"fraud_card/v{definition.version}/"
    custom = ScoringJobSettings(
        scoring_predictions_topic="p", scoring_dead_letter_topic="d", kafka_bootstrap="b:1"
    )
    assert topics(definition, custom, "fraud") == {"rtml.fraud.transactions": 2, "d": 1, "p": 2}


def test_params_fill_exactly_the_placeholders_of_the_sql_the_job_loads() -> None:
    definition = featuresets.load("fraud_card")
    loaded = (
        SQL_DIR / "common" / "raw_source.sql",
        definition.source.sql,
        SQL_DIR / "common" / "dead_letters.sql",
        SQL_DIR / "scoring" / "predictions.sql",
    )
    code = "\n".join(
        line for path in loaded for line in path.read_text().splitlines()
        if not line.lstrip().startswith("--")
    )  # fmt: skip
    assert set(PLACEHOLDER.findall(code)) == set(params(definition, ScoringJobSettings(), "fraud"))


def test_an_explicit_threshold_setting_wins_over_the_metadata() -> None:
    from_metadata = scorer_udf(ScoringJobSettings(scoring_follow_versions=False), SPEC)
    explicit = scorer_udf(ScoringJobSettings(scoring_threshold=0.9), SPEC)
    assert from_metadata._func.settings.threshold == 0.3
    assert from_metadata._func.follow is None
    assert explicit._func.settings.threshold == 0.9
    assert explicit._func.follow.topic == "rtml.models.current"
    assert explicit._func.settings.feature_names == SPEC.feature_names


def test_the_job_plans_with_one_model_call_per_event_and_rejects_missing_features() -> None:
    settings = ScoringJobSettings()
    definition = featuresets.load("fraud_card")
    t_env = flinkjob.table_environment(settings, "test-scoring-plan")
    plan = build(t_env, definition, settings, SPEC).explain()
    physical = plan.split("== Optimized Physical Plan ==")[1].split("== Optimized Execution")[0]
    assert physical.count("score_features(") == 1  # the ROW's fields do not call it again
    assert "predictions" in physical and "dead_letters" in physical
    config = t_env.get_config()
    assert config.get("python.fn-execution.arrow.batch.size", "") == "1000"
    assert config.get("python.fn-execution.bundle.size", "") == "1000"

    wrong = ModelSpec("fraud", "4", ("amount", "no_such_feature"), None)
    t_env = flinkjob.table_environment(settings, "test-scoring-plan-2")
    with pytest.raises(ValueError, match=r"fraud/4 needs columns \['no_such_feature'\]"):
        build(t_env, definition, settings, wrong)


def _sink_options(statements: list) -> dict[str, str]:
    """The WITH options of the rendered `CREATE TEMPORARY TABLE predictions` statement."""
    (ddl,) = [s.text for s in statements if "TABLE predictions" in s.text]
    return dict(re.findall(r"'([^']+)'\s*=\s*'([^']*)'", ddl.split("WITH", 1)[1]))


@pytest.mark.parametrize("delivery", ["exactly-once", "at-least-once"])
def test_the_delivery_setting_chooses_the_predictions_sinks_guarantee(
    delivery: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RTML_SCORING_DELIVERY", delivery)
    settings = ScoringJobSettings()
    assert settings.scoring_delivery == delivery
    values = params(featuresets.load("fraud_card"), settings, "fraud")
    options = _sink_options(sqlfiles.load("scoring/predictions.sql", values))
    assert options["sink.delivery-guarantee"] == delivery
    assert options["topic"] == "rtml.predictions.fraud"


def test_exactly_once_is_the_default_and_other_guarantees_are_refused() -> None:
    assert ScoringJobSettings().scoring_delivery == "exactly-once"
    with pytest.raises(ValidationError, match="scoring_delivery"):
        ScoringJobSettings(scoring_delivery="exactly_once")
    with pytest.raises(ValidationError, match="scoring_delivery"):
        ScoringJobSettings(scoring_delivery="none")  # Flink's third mode: may lose predictions


@pytest.mark.parametrize(
    ("delivery", "linger_ms"),
    [("exactly-once", EXACTLY_ONCE_LINGER_MS), ("at-least-once", AT_LEAST_ONCE_LINGER_MS)],
)
def test_the_batches_linger_follows_the_delivery_unless_set(delivery: str, linger_ms: int) -> None:
    assert ScoringJobSettings(scoring_delivery=delivery).scoring_linger_ms == linger_ms
    chosen = ScoringJobSettings(scoring_delivery=delivery, scoring_linger_ms=70)
    assert chosen.scoring_linger_ms == 70


def test_an_at_least_once_job_plans_with_an_at_least_once_kafka_sink() -> None:
    settings = ScoringJobSettings(scoring_delivery="at-least-once")
    t_env = flinkjob.table_environment(settings, "test-scoring-plan-alo")
    build(t_env, featuresets.load("fraud_card"), settings, SPEC).explain()  # the connector agrees
    with t_env.execute_sql("SHOW CREATE TABLE predictions").collect() as rows:
        (ddl,) = [row[0] for row in rows]
    assert "'sink.delivery-guarantee' = 'at-least-once'" in ddl
    bundle_ms = t_env.get_config().get("python.fn-execution.bundle.time", None)
    assert bundle_ms == str(AT_LEAST_ONCE_LINGER_MS)
