from pathlib import Path

from bench.features import (
    FRESH_NAME,
    backlog_rate,
    fraud_card_files,
    fresh_featureset,
    newest_by_key,
    rates_by_tenth,
    reached_at,
    stale_keys,
)
from jobs.features import build, query_columns
from rtml import featuresets, flinkjob
from rtml.settings import FeatureJobSettings


def test_rates_by_tenth_leave_out_the_start_up_tenth() -> None:
    # 1000 events: the first 100 take 5 s (start-up), then 100 per second
    progress = [(5.0 + t, 100 * (t + 1)) for t in range(10)]
    assert rates_by_tenth(progress, 1000) == [100] * 9


def test_a_slowing_job_shows_in_the_later_tenths() -> None:
    progress = [(1.0, 100), (2.0, 200), (3.0, 300), (4.0, 400), (5.0, 500),
                (7.0, 600), (9.0, 700), (11.0, 800), (13.0, 900), (15.0, 1000)]  # fmt: skip
    assert rates_by_tenth(progress, 1000) == [100, 100, 100, 100, 50, 50, 50, 50, 50]


def test_tenths_within_one_poll_or_never_reached_have_no_rate() -> None:
    progress = [(1.0, 100), (2.0, 300), (3.0, 400)]
    assert rates_by_tenth(progress, 1000) == [100, None, 100, None, None, None, None, None, None]


def test_reached_at_is_the_first_poll_at_or_past_the_count() -> None:
    progress = [(1.0, 100), (2.0, 300), (3.0, 400)]
    assert reached_at(progress, 300) == 2.0
    assert reached_at(progress, 250) == 2.0
    assert reached_at(progress, 401) is None


def test_newest_by_key_passes_events_through_and_keeps_each_keys_newest_time() -> None:
    events = [{"card": "a", "ts": 5}, {"card": "b", "ts": 3}, {"card": "a", "ts": 4},
              {"card": "a", "ts": 7}]  # fmt: skip
    newest: dict[str, int] = {}
    passed = list(newest_by_key(events, lambda e: e["card"], newest))
    assert passed == events
    assert newest == {"a": 7, "b": 3}


def test_stale_keys_are_absent_or_older_than_expected() -> None:
    def value(ms: int) -> bytes:
        return b'{"t":%d,"v":1}' % ms

    expected = {"fresh": 10, "newer": 10, "old": 10, "absent": 10}
    stored = {"fresh": value(10), "newer": value(12), "old": value(9), "absent": None}
    assert stale_keys(expected, stored) == {"old", "absent"}


def test_a_backlog_seen_whole_in_one_poll_has_no_rate() -> None:
    assert backlog_rate(10_000, 1.0, 3.0) == 4000
    assert backlog_rate(2_000, 5.0, 5.0) is None


# -- the stand-in without windows, planned by Flink (a JVM, no services) --------------------------


def planned_columns(features_dir: Path, name: str) -> tuple[list[tuple[str, str]], str]:
    settings = FeatureJobSettings(kafka_bootstrap="127.0.0.1:1", redis_url="redis://127.0.0.1:1/0")
    t_env = flinkjob.table_environment(settings, f"plan-{name}")
    plan = build(t_env, featuresets.load(name, features_dir), settings).explain()
    return query_columns(t_env.from_path("features_out")), plan


def test_the_stand_in_without_windows_has_fraud_cards_columns_and_no_windows(
    tmp_path: Path,
) -> None:
    real, real_plan = planned_columns(fraud_card_files(tmp_path / "real"), "fraud_card")
    stand_in, plan = planned_columns(
        fraud_card_files(tmp_path / "stand-in", windows=False), "fraud_card"
    )
    assert stand_in == real
    assert "SLIDING_WINDOW_FEATURES" in real_plan
    assert "SLIDING_WINDOW_FEATURES" not in plan

    features_dir, definition = fresh_featureset(tmp_path / "fresh", windows=False)
    assert planned_columns(features_dir, FRESH_NAME)[0] == real
    assert definition["source"]["topic"] == f"bench.{FRESH_NAME}.transactions"
