"""Model scoring: batched async V2 calls with timeouts, retries, a circuit breaker and fallbacks.

`Scorer(settings, fallback_model=PATH, rule=DefaultRule(...)).score(rows)` returns one
`Prediction` per row: from the model server (`primary`) when it answers in time, else from a local
scikit-learn model (`fallback_model`), else from a fixed rule (`default`), with the reason.
"""

from rtml.scoring.breaker import BreakerState, CircuitBreaker
from rtml.scoring.fallback import DefaultRule, FallbackModel
from rtml.scoring.scorer import Prediction, ScorePath, Scorer, ScorerMetrics
from rtml.scoring.settings import ScoringSettings

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "DefaultRule",
    "FallbackModel",
    "Prediction",
    "ScorePath",
    "Scorer",
    "ScorerMetrics",
    "ScoringSettings",
]
