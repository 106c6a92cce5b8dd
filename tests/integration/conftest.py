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
    }
    return name, definition, env
