"""`rtml shadow` without services: names and settings of a shadow, its isolation and version
checks, reading prediction records, the join by event id and the statistics."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import kafka
import numpy as np
import pytest

from rtml import cli, model_repo, shadow
from rtml.backtest import isolation
from rtml.backtest.metrics import psi
from rtml.processes import free_port
from rtml.settings import ScoringJobSettings


def prediction(
    event_id: str, ms: int, score: float, *, decision: bool | None = None,
    path: str = "primary", version: str = "fraud/1",
) -> bytes:  # fmt: skip
    """A record as sql/scoring/predictions.sql writes it."""
    seconds, millis = divmod(ms, 1000)
    stamp = np.datetime64(seconds, "s").astype(str) + f".{millis:03d}Z"
    return json.dumps({
        "entity": "card-1", "event_id": event_id, "score": score,
        "decision": score >= 0.5 if decision is None else decision, "model_version": version,
        "path": path, "feature_snapshot_id": f"fraud_card/v2/{event_id}", "event_time": stamp,
        "scoring_time": stamp, "latency_ms": 1.0, "error": None,
    }).encode()  # fmt: skip


def side(*values: bytes | None) -> shadow.Side:
    result = shadow.Side()
    result.add(values)
    return result


# -- names, settings, isolation -------------------------------------------------------------------


def test_a_shadow_writes_topics_and_uses_ids_of_its_own() -> None:
    planned = shadow.plan(ScoringJobSettings(), "fraud", "2")
    assert planned.predictions_topic == "rtml.shadow.fraud.v2"
    assert planned.dead_letter_topic == "rtml.shadow.fraud.v2.dead-letter"
    assert planned.production_predictions_topic == "rtml.predictions.fraud"
    assert planned.id_prefix == "rtml-scoring-shadow-v2"
    assert planned.consumer_group == "rtml-scoring-shadow-v2-fraud"
    assert planned.environment() == {
        "RTML_SCORING_MODEL_VERSION": "2",
        "RTML_SCORING_FOLLOW_VERSIONS": "false",
        "RTML_SCORING_PREDICTIONS_TOPIC": "rtml.shadow.fraud.v2",
        "RTML_SCORING_DEAD_LETTER_TOPIC": "rtml.shadow.fraud.v2.dead-letter",
        "RTML_SCORING_ID_PREFIX": "rtml-scoring-shadow-v2",
        "RTML_SCORING_JOB_NAME": "rtml-shadow-fraud-v2",
    }


def test_the_shadow_environment_gives_the_scoring_job_the_shadow_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    planned = shadow.plan(ScoringJobSettings(), "fraud", "7")
    for name, value in planned.environment().items():
        monkeypatch.setenv(name, value)
    settings = ScoringJobSettings()
    assert settings.scoring_model_version == "7"
    assert settings.scoring_follow_versions is False
    assert settings.scoring_predictions_topic == "rtml.shadow.fraud.v7"
    assert settings.scoring_dead_letter_topic == "rtml.shadow.fraud.v7.dead-letter"
    assert settings.scoring_id_prefix == "rtml-scoring-shadow-v7"
    assert settings.scoring_job_name == "rtml-shadow-fraud-v7"


def test_production_topic_follows_the_predictions_topic_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RTML_SCORING_PREDICTIONS_TOPIC", "mine.predictions")
    monkeypatch.setenv("RTML_SCORING_ID_PREFIX", "mine")
    planned = shadow.plan(ScoringJobSettings(), "fraud", "2")
    assert planned.production_predictions_topic == "mine.predictions"
    assert planned.predictions_topic == "rtml.shadow.fraud.v2"  # never production's setting
    assert planned.id_prefix == "mine-shadow-v2"


@pytest.mark.parametrize(("model", "version"), [("fraud", "2 "), ("../x", "1"), ("fraud", "")])
def test_names_that_cannot_name_topics_are_refused(model: str, version: str) -> None:
    with pytest.raises(shadow.ShadowRefused, match="invalid"):
        shadow.plan(ScoringJobSettings(), model, version)


def production(**topics: str) -> isolation.ProductionNames:
    return isolation.production_names(
        [], predictions_topics=topics.values(), models_topic="rtml.models.current",
        labels_topic="rtml.fraud.labels",
    )  # fmt: skip


def test_a_shadow_writing_a_production_topic_is_refused() -> None:
    planned = shadow.plan(ScoringJobSettings(), "fraud", "2")
    shadow.check_isolation(planned, production(p="rtml.predictions.fraud"), "rtml-scoring")
    with pytest.raises(shadow.ShadowRefused, match="rtml.shadow.fraud.v2 is a production"):
        shadow.check_isolation(planned, production(p="rtml.shadow.fraud.v2"), "rtml-scoring")
    with pytest.raises(shadow.ShadowRefused, match="dead-letter topic"):
        shadow.check_isolation(
            planned, production(p="rtml.shadow.fraud.v2.dead-letter"), "rtml-scoring"
        )
    with pytest.raises(shadow.ShadowRefused, match="fence"):
        shadow.check_isolation(planned, production(), planned.id_prefix)


def test_production_names_include_the_configured_and_default_topics_and_feature_sets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RTML_SCORING_PREDICTIONS_TOPIC", "rtml.shadow.fraud.v2")
    names = shadow._production_names(ScoringJobSettings(), "fraud")
    assert "rtml.shadow.fraud.v2" in names.topics
    assert "rtml.predictions.fraud" in names.topics
    assert "rtml.scoring.fraud.dead-letter" in names.topics
    assert "rtml.fraud.transactions" in names.topics  # fraud_card's source, from sql/features


def test_start_refuses_a_shadow_on_a_production_topic_with_exit_code_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RTML_SCORING_PREDICTIONS_TOPIC", "rtml.shadow.fraud.v2")
    assert cli.main(["shadow", "start", "fraud", "2", "--detached"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rtml: error: the shadow's predictions topic rtml.shadow.fraud.v2 is")


def test_a_version_that_is_not_published_or_not_served_is_refused(tmp_path: Path) -> None:
    settings = ScoringJobSettings(model_url=f"http://127.0.0.1:{free_port()}")  # nobody listens
    with pytest.raises(shadow.ShadowRefused, match="version 2 is not published"):
        shadow.check_version(settings, tmp_path, "fraud", "2")
    folder = tmp_path / "fraud" / "2"
    folder.mkdir(parents=True)
    (folder / model_repo.METADATA_FILENAME).write_text("{}")
    with pytest.raises(shadow.ShadowRefused, match="does not serve model fraud version 2"):
        shadow.check_version(settings, tmp_path, "fraud", "2")


def test_start_refuses_an_unpublished_version_with_exit_code_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("RTML_SCORING_MODEL_REPO", str(tmp_path))
    monkeypatch.setenv("RTML_RUNTIME_DIR", str(tmp_path / "runtime"))
    assert cli.main(["shadow", "start", "fraud", "2", "--detached"]) == 2
    assert "fraud version 2 is not published" in capsys.readouterr().err
    assert not (tmp_path / "runtime" / "shadows").exists()  # nothing recorded, nothing submitted


def test_stop_without_a_recorded_shadow_says_how_to_find_the_job(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("RTML_RUNTIME_DIR", str(tmp_path))
    assert cli.main(["shadow", "stop", "fraud", "2"]) == 2
    err = capsys.readouterr().err
    assert "no shadow of fraud version 2 was started here" in err
    assert "rtml jobs list" in err


def test_records_round_trip_and_a_broken_one_is_a_clear_error(tmp_path: Path) -> None:
    path = shadow.record_path(tmp_path, "fraud", "2")
    assert shadow.read_record(path) is None
    record = shadow.Record("fraud", "2", "ab" * 16, "127.0.0.1:8081", "g", "t", 1)
    shadow.write_record(path, record)
    assert shadow.read_record(path) == record
    path.write_text("{not json")
    with pytest.raises(shadow.ShadowRefused, match="not a shadow record"):
        shadow.read_record(path)


def test_the_environment_overrides_are_undone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTML_SCORING_MODEL_VERSION", "1")
    monkeypatch.delenv("RTML_SCORING_FOLLOW_VERSIONS", raising=False)
    overrides = {"RTML_SCORING_MODEL_VERSION": "2", "RTML_SCORING_FOLLOW_VERSIONS": "false"}
    with shadow._environment(overrides):
        assert ScoringJobSettings().scoring_model_version == "2"
        assert os.environ["RTML_SCORING_FOLLOW_VERSIONS"] == "false"
    assert os.environ["RTML_SCORING_MODEL_VERSION"] == "1"
    assert "RTML_SCORING_FOLLOW_VERSIONS" not in os.environ


# -- reading predictions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2025-11-21T04:40:20.550Z", 1_763_700_020_550),
        ("2025-11-21T04:40:20.55Z", 1_763_700_020_550),  # trailing zeros may be dropped
        ("2025-11-21T04:40:20Z", 1_763_700_020_000),
    ],
)
def test_event_times_are_read_as_epoch_ms(text: str, ms: int) -> None:
    assert shadow.event_ms(text) == ms


def test_a_prediction_record_is_parsed_and_a_malformed_one_is_none() -> None:
    parsed = shadow.parse_prediction(prediction("e-1", 1_763_700_020_550, 0.7, version="f/2"))
    assert parsed == shadow.Scored("e-1", 1_763_700_020_550, 0.7, True, "primary", "f/2")
    for bad in (None, b"", b"not json", b"[]", json.dumps({"event_id": "e-1"}).encode()):
        assert shadow.parse_prediction(bad) is None


def test_a_side_keeps_the_latest_prediction_per_event_and_counts_the_rest() -> None:
    got = side(
        prediction("e-1", 1, 0.1), b"{", prediction("e-2", 2, 0.2), prediction("e-1", 1, 0.9)
    )
    assert got.records == 4 and got.malformed == 1 and got.rescored == 1
    assert got.by_event["e-1"].score == 0.9


# -- join and statistics ---------------------------------------------------------------------------


def test_the_join_pairs_events_by_id_oldest_first_and_counts_the_unmatched() -> None:
    production_side = side(
        prediction("e-3", 3000, 0.3), prediction("e-1", 1000, 0.1), prediction("e-9", 9000, 0.9)
    )
    shadow_side = side(
        prediction("e-1", 1000, 0.2), prediction("e-3", 3000, 0.4), prediction("e-5", 5000, 0.5),
        prediction("e-6", 6000, 0.6),
    )  # fmt: skip
    joined = shadow.join(production_side.by_event, shadow_side.by_event)
    assert [(p.event_id, s.score) for p, s in joined.pairs] == [("e-1", 0.2), ("e-3", 0.4)]
    assert (joined.only_production, joined.only_shadow) == (1, 2)


def compared(rows: list[tuple[float, float]], window: int | None = None, **paths: str) -> dict:
    """compare() of events whose production and shadow scores are `rows`, one event per second."""
    production_side = side(*[
        prediction(f"e-{i}", i * 1000, p, path=paths.get(f"p{i}", "primary"))
        for i, (p, _) in enumerate(rows)
    ])  # fmt: skip
    shadow_side = side(*[
        prediction(f"e-{i}", i * 1000, s, path=paths.get(f"s{i}", "primary"), version="fraud/2")
        for i, (_, s) in enumerate(rows)
    ])  # fmt: skip
    return shadow.compare(shadow.join(production_side.by_event, shadow_side.by_event), window)


def test_agreement_and_score_shift_are_computed_over_the_joined_events() -> None:
    rows = [(0.1, 0.2), (0.6, 0.4), (0.7, 0.9), (0.2, 0.1)]  # the second decision differs
    got = compared(rows, s1="fallback_model")
    assert got["joined"] == got["joined_total"] == 4
    assert got["agreement"] == 0.75 and got["agree"] == 3
    diffs = [s - p for p, s in rows]
    assert math.isclose(got["score_diff"]["mean"], sum(diffs) / 4)
    assert math.isclose(got["score_diff"]["mean_abs"], sum(abs(d) for d in diffs) / 4)
    assert math.isclose(got["score_diff"]["max_abs"], 0.2)
    assert got["psi"] == psi(np.array([s for _, s in rows]), np.array([p for p, _ in rows]))
    assert got["production"]["paths"] == {"primary": 4, "fallback_model": 0, "default": 0}
    assert got["shadow"]["paths"] == {"primary": 3, "fallback_model": 1, "default": 0}
    assert got["shadow"]["fallback_rate"] == 0.25 and got["production"]["fallback_rate"] == 0.0
    assert got["production"]["model_versions"] == {"fraud/1": 4}
    assert got["shadow"]["model_versions"] == {"fraud/2": 4}
    assert (got["first_event_ms"], got["last_event_ms"]) == (0, 3000)
    json.dumps(got)  # JSON-ready


def test_the_window_takes_the_latest_joined_events_by_event_time() -> None:
    rows = [(0.9, 0.1), (0.9, 0.1), (0.3, 0.3), (0.8, 0.8)]  # the last two agree
    got = compared(rows, window=2)
    assert (got["joined"], got["joined_total"], got["window"]) == (2, 4, 2)
    assert got["agreement"] == 1.0 and got["score_diff"]["max_abs"] == 0.0
    assert got["first_event_ms"] == 2000
    assert compared(rows, window=10)["joined"] == 4
    with pytest.raises(ValueError, match="at least 1"):
        compared(rows, window=0)


def test_identical_sides_agree_fully_with_no_shift() -> None:
    rows = [(float(x), float(x)) for x in np.linspace(0.01, 0.99, 50)]
    got = compared(rows)
    assert got["agreement"] == 1.0
    assert got["score_diff"] == {"mean": 0.0, "mean_abs": 0.0, "max_abs": 0.0}
    assert got["psi"] == pytest.approx(0.0)


def test_nothing_joined_yet_gives_empty_statistics_not_errors() -> None:
    got = shadow.compare(shadow.join(side(prediction("e-1", 1, 0.5)).by_event, {}))
    assert got["joined"] == 0 and got["agreement"] is None and got["psi"] is None
    assert got["score_diff"] == {"mean": None, "mean_abs": None, "max_abs": None}
    assert got["only_production"] == 1
    text = shadow.format_status({
        **got, "production_topic": "p", "shadow_topic": "s",
        "shadow": {**got["shadow"], "topic_exists": False},
    })  # fmt: skip
    assert "agreement       -" in text
    assert "note: s does not exist (yet)" in text


def test_the_status_text_shows_the_numbers() -> None:
    got = compared([(0.1, 0.2), (0.6, 0.4), (0.7, 0.9), (0.2, 0.1)], window=4)
    text = shadow.format_status({**got, "production_topic": "prod", "shadow_topic": "shad"})
    assert text.startswith("shadow shad vs production prod: the last 4 of 4 events scored by both")
    assert "agreement       75.00%  (3 of 4 decisions equal)" in text
    assert "mean +0.0000" in text and "max |diff| 0.2000" in text
    assert "fraud/1: 4" in text and "fraud/2: 4" in text


def fake_summaries(count: int, closed: list[bool]) -> Iterator[dict[str, int]]:
    """`count` summaries, then Ctrl-C (as a user ends --follow); records that it was closed."""
    try:
        for n in range(count):
            yield {"n": n}
        raise KeyboardInterrupt
    finally:
        closed.append(True)


def test_status_prints_once_or_follows_until_ctrl_c(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    closed: list[bool] = []
    monkeypatch.setattr(shadow, "status_summaries", lambda *a: fake_summaries(3, closed))
    assert cli.main(["shadow", "status", "fraud", "2", "--json"]) == 0
    assert capsys.readouterr().out.splitlines() == ['{"n": 0}']
    assert closed == [True]
    follow = ["shadow", "status", "fraud", "2", "--json", "--follow", "--every", "0"]
    assert cli.main(follow) == 0
    assert capsys.readouterr().out.splitlines() == ['{"n": 0}', '{"n": 1}', '{"n": 2}']
    assert cli.main(["shadow", "status", "fraud", "2", "--window", "0"]) == 2
    assert "--window must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ({"g": "OK"}, None),
        ({"g": "GroupIdNotFoundError"}, None),  # never committed: nothing to delete
        ({"g": "GroupNotEmptyError"}, "GroupNotEmptyError"),
        ([("g", "OK")], None),  # the shape kafka-python's docstring promises
    ],
)
def test_deleting_the_shadow_consumer_group_reads_the_admin_answer(
    monkeypatch: pytest.MonkeyPatch, answer: object, problem: str | None
) -> None:
    class FakeAdmin:
        def __init__(self, **_: object) -> None:
            pass

        def delete_groups(self, groups: list[str]) -> object:
            assert groups == ["g"]
            return answer

        def close(self) -> None:
            pass

    monkeypatch.setattr(kafka, "KafkaAdminClient", FakeAdmin)
    assert shadow._delete_group("127.0.0.1:1", "g") == problem
