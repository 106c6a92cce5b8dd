"""Scorer against the stack's real MLServer: same scores as calling the model directly."""

from __future__ import annotations

import numpy as np
import pytest

from rtml import model_repo
from rtml.scoring import ScorePath, Scorer, ScoringSettings
from rtml.stack import Stack

pytestmark = pytest.mark.integration


def test_scores_from_mlserver_equal_the_model_called_directly(stack: Stack) -> None:
    settings = ScoringSettings(
        model_name=model_repo.SMOKE_MODEL_NAME,
        feature_names=tuple(model_repo.SMOKE_FEATURES),
        base_url=stack.settings.model_url,
        sub_batch_size=100,
        request_timeout_ms=2000,  # the first requests after start-up may be slow
        deadline_ms=5000,
    )
    rows = np.random.default_rng(11).normal(size=(1000, 3))
    frame_rows = [dict(zip(model_repo.SMOKE_FEATURES, row, strict=True)) for row in rows[:10]]
    with Scorer(settings) as scorer:
        predictions = scorer.score(rows)
        from_dicts = scorer.score(frame_rows)
        metrics = scorer.metrics()
    expected = model_repo.train_smoke_model().predict_proba(rows)[:, 1]
    assert {p.path for p in predictions} == {ScorePath.PRIMARY}, predictions[0].error
    assert {p.model_version for p in predictions} == {"smoke/1"}
    np.testing.assert_allclose([p.score for p in predictions], expected, rtol=0, atol=1e-12)
    assert [p.score for p in from_dicts] == [p.score for p in predictions[:10]]
    assert metrics.requests == 11 and metrics.primary == 1010
