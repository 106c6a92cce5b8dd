"""ScoringSettings validation."""

from __future__ import annotations

import dataclasses

import pytest

from rtml.scoring.settings import ScoringSettings


def test_defaults_are_valid_and_frozen() -> None:
    settings = ScoringSettings("fraud", ["amount", "tx_count_1m"])
    assert settings.feature_names == ("amount", "tx_count_1m")
    assert settings.deadline_ms > settings.request_timeout_ms
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.retries = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    "changes",
    [
        {"model_name": ""},
        {"feature_names": ()},
        {"feature_names": ("a", "a")},
        {"base_url": "https://x:1"},
        {"sub_batch_size": 0},
        {"max_in_flight": 0},
        {"retries": -1},
        {"request_timeout_ms": 0},
        {"deadline_ms": -1},
        {"backoff_base_ms": 10, "backoff_max_ms": 5},
        {"breaker_failure_threshold": 0},
        {"breaker_cooldown_ms": 0},
        {"breaker_half_open_probes": 0},
        {"threshold": 1.5},
        {"score_column": -1},
        {"connect_timeout_ms": 0},
    ],
)
def test_rejects_bad_values(changes: dict) -> None:
    values = {"model_name": "m", "feature_names": ("a",), **changes}
    with pytest.raises(ValueError):
        ScoringSettings(**values)


def test_job_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from rtml.settings import ScoringJobSettings

    monkeypatch.setenv("RTML_MODEL_HTTP_PORT", "18080")
    monkeypatch.setenv("RTML_SCORING_MODEL", "fraud-gbt")
    monkeypatch.setenv("RTML_SCORING_DEADLINE_MS", "400")
    monkeypatch.setenv("RTML_SCORING_FALLBACK_MODEL", str(tmp_path))
    job = ScoringJobSettings()
    assert job.model_url == "http://127.0.0.1:18080"
    assert job.scoring_fallback_model == tmp_path
    settings = job.scoring_settings(["amount", "tx_count_1m"])
    assert settings == ScoringSettings(
        "fraud-gbt", ("amount", "tx_count_1m"), base_url="http://127.0.0.1:18080", deadline_ms=400
    )
    monkeypatch.setenv("RTML_SCORING_RETRIES", "-1")
    with pytest.raises(ValueError, match="retries"):
        ScoringJobSettings().scoring_settings(["a"])
