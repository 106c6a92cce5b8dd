"""Fixtures shared by the integration tests (the session stack itself: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ephemeral import private_featureset


@pytest.fixture
def featureset(tmp_path: Path) -> tuple[str, dict, dict[str, str]]:
    """A private copy of fraud_card and the environment of a scoring job over it: its own
    topics, consumer group and transactional ids, so tests never share a job's state."""
    name, definition, env = private_featureset(tmp_path, "fraud_card")
    run = env["RTML_FEATURES_ID_PREFIX"]
    env = {
        **env,
        "RTML_SCORING_FEATURESET": name,
        "RTML_SCORING_PREDICTIONS_TOPIC": f"{name}.predictions",
        "RTML_SCORING_DEAD_LETTER_TOPIC": f"{name}.scoring-dead-letter",
        "RTML_SCORING_MODELS_TOPIC": f"{name}.models",
        "RTML_SCORING_ID_PREFIX": f"{run}-scoring",
        # These tests check scores, paths and exactly-once, not the model server's speed: on a
        # loaded 2-core CI machine a healthy answer can miss the 100 ms default, and its rows
        # would go to the fallback. Tests of timeouts and the breaker set their own.
        "RTML_SCORING_REQUEST_TIMEOUT_MS": "2000",
        "RTML_SCORING_DEADLINE_MS": "5000",
    }
    return name, definition, env
